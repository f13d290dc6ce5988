"""The JobLog interface: the base class owns timestamps, attempt numbers and the rule that a status
never goes backwards; a backend implements only the `_primitives`, each one atomic."""

from __future__ import annotations

import os
import random
import secrets
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, ClassVar

from framefarm._procs import process_alive
from framefarm.errors import FramefarmError, LeaseHeld, TransientError, UserError
from framefarm.model import (
    STATUSES,
    TERMINAL_STATUSES,
    JobKind,
    JobRecord,
    Lease,
    RunRecord,
    can_move,
    job_name,
)
from framefarm.storage._base import check_reach
from framefarm.tracing import traced


def now_iso() -> str:
    """The current UTC time, ISO 8601 with milliseconds and a Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


IDENTITY = frozenset({"run_id", "job", "attempt", "kind", "index"})
"""The fields that name a job attempt: an update never changes them."""

_NOT_STARTED = frozenset({"SUBMITTED", "PENDING", "RUNNABLE"})

LEASE_SECONDS = 30.0
"""How long a run's lease lasts unless renewed; its holder renews it every few seconds."""


def _started_after(pid: int, since: str) -> bool:
    """True when process `pid` started after the time `since` (so it is not the process that
    took a lease then: its pid was used again); False when that cannot be told."""
    try:
        with open("/proc/stat") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith("btime "))
        with open(f"/proc/{pid}/stat") as f:
            ticks = float(f.read().rpartition(")")[2].split()[19])
        taken = datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp()
    except (OSError, ValueError, IndexError, StopIteration):
        return False
    return boot + ticks / os.sysconf("SC_CLK_TCK") > taken + 2.0


RUN_SWAPS = 50
"""Times `update_run` reads and writes again before it gives up (each miss means another
process wrote the record between its read and its write)."""


class StatusConflict(FramefarmError):
    """A status change that would go backwards or leave a final status."""


class JobLog(ABC):
    """Who ran what, when, with what result: one record per job attempt, one record per run."""

    url: str

    reach: ClassVar[str] = "machine"
    """Who can use this job log (storage.REACHES): a runner whose jobs run elsewhere needs a
    wider one."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        check_reach(cls)

    # -- runs ---------------------------------------------------------------------------------

    @traced("joblog.put_run")
    def put_run(self, run: RunRecord) -> None:
        """Create or replace the run's record (the plan lives here, for jobs to read)."""
        self._put_run(run)

    @traced("joblog.get_run")
    def get_run(self, run_id: str) -> RunRecord | None:
        """The run's record, or None."""
        return self._get_run(run_id)

    @traced("joblog.runs")
    def runs(self) -> list[RunRecord]:
        """Every run, newest first."""
        return sorted(self._list_runs(), key=lambda r: (r.created_at, r.run_id), reverse=True)

    @traced("joblog.update_run")
    def update_run(self, run_id: str,
                   change: Callable[[RunRecord | None], RunRecord | None]) -> RunRecord | None:
        """Change the run's record in one step: `change(current)` (None while there is none)
        gives the record to write, or None to leave it. Several processes change one run's
        record (the command that submitted a plan job, the plan job, `framefarm cancel`): when
        another wrote it in between, it is read again and `change` runs again on what is there,
        so no one's fields are lost. The record as it now stands, or None."""
        for tries in range(RUN_SWAPS):
            current = self._get_run(run_id)
            wanted = change(current)
            if wanted is None or wanted == current:
                return current
            if self._swap_run(wanted, expect=current):
                return wanted
            time.sleep(random.uniform(0.0, 0.005 * 2 ** min(tries, 6)))  # jitter: racers part
        raise TransientError(f"run {run_id}'s record changed under each of {RUN_SWAPS} writes "
                             "(something keeps rewriting it); try again")

    def mark_cancelled(self, run_id: str) -> RunRecord | None:
        """Record that the run was cancelled (once; the first time stays); the run, or None."""
        return self.update_run(run_id, lambda run: None if run is None or run.cancelled_at
                               else replace(run, cancelled_at=now_iso()))

    # -- the run's lease: one driver at a time ------------------------------------------------

    @traced("joblog.acquire_lease")
    def acquire_lease(self, run_id: str, *, seconds: float = LEASE_SECONDS) -> Lease:
        """Take the run's lease for this process; LeaseHeld naming the holder when another
        live process has it. A stale lease (expired, or its holder's process is gone from this
        machine) is taken over."""
        mine = Lease(run_id=run_id, token=secrets.token_hex(8), host=socket.gethostname(),
                     pid=os.getpid(), since=now_iso(), expires_at=time.time() + seconds)
        for _ in range(5):
            current = self._get_lease(run_id)
            if current is not None and not self._stale(current):
                raise LeaseHeld(f"run {run_id} is being rendered by {current.describe()}: wait "
                                f"for it, or stop it with `framefarm cancel {run_id}`")
            if self._swap_lease(run_id, mine, expect=current.token if current else None):
                return mine
        raise LeaseHeld(f"run {run_id}: another process keeps taking its lease; try again")

    @traced("joblog.renew_lease")
    def renew_lease(self, lease: Lease, *, seconds: float = LEASE_SECONDS) -> Lease | None:
        """Extend the lease; None when it is no longer ours (it went stale and was taken)."""
        renewed = replace(lease, expires_at=time.time() + seconds)
        return renewed if self._swap_lease(lease.run_id, renewed, expect=lease.token) else None

    @traced("joblog.release_lease")
    def release_lease(self, lease: Lease) -> None:
        """Give the lease up (only if it is still ours)."""
        self._drop_lease(lease.run_id, lease.token)

    def lease(self, run_id: str) -> Lease | None:
        """The run's live lease, or None (a stale one counts as none)."""
        current = self._get_lease(run_id)
        return None if current is None or self._stale(current) else current

    @staticmethod
    def _stale(lease: Lease) -> bool:
        # On this machine the holder's process decides: a driver that is stopped (Ctrl-Z, a
        # laptop asleep) keeps its run however long it misses renewing; one that is gone (or
        # whose pid now names a later process) has lost it at once. Elsewhere, the expiry does.
        if lease.host == socket.gethostname():
            return not process_alive(lease.pid) or _started_after(lease.pid, lease.since)
        return lease.expires_at < time.time()

    # -- jobs ---------------------------------------------------------------------------------

    @traced("joblog.start_job")
    def start_job(self, *, run_id: str, kind: JobKind, index: int | None = None,
                  attempt: int | None = None, status: str = "RUNNING", **fields: Any) -> JobRecord:
        """Record a new attempt of a job and return it.

        With `attempt` None the job's last attempt is taken over when it has not started yet (a
        runner wrote it as SUBMITTED), else the attempt is one more than the last. A given
        attempt that is already recorded is taken over when it is not final, else it is an error.
        """
        if status not in STATUSES:
            raise UserError(f"unknown job status {status!r}: use one of {', '.join(STATUSES)}")
        name = job_name(kind, index)
        stamp = now_iso()
        times = {"submitted_at": stamp}
        if status in ("RUNNING", *TERMINAL_STATUSES):
            times["started_at"] = stamp
        if attempt is not None:
            existing = self._get_job(run_id, name, attempt)
            if existing is not None:
                times["submitted_at"] = existing.submitted_at or stamp
                return self.update_job(existing, status=status, **{**times, **fields})
            record = JobRecord(run_id=run_id, job=name, kind=kind, index=index, attempt=attempt,
                               status=status, **{**times, **fields})
            if not self._insert_job(record):
                raise StatusConflict(f"{name} attempt {attempt} of run {run_id} was recorded twice")
            return record
        mine = self._attempts(run_id, name)  # this job's only: a run may have a million
        waiting = max(mine, key=lambda r: r.attempt, default=None)
        if waiting is not None and waiting.status in _NOT_STARTED:
            try:
                return self.update_job(waiting, status=status, **{**times, **fields,
                                                                  "submitted_at": waiting.submitted_at})
            except StatusConflict:
                pass  # another process started it first: record a new attempt
        # Next attempt number; an insert that loses a race moves on to the one after.
        last = max((r.attempt for r in mine), default=0)
        for candidate in range(last + 1, last + 100):
            record = JobRecord(run_id=run_id, job=name, kind=kind, index=index,
                               attempt=candidate, status=status, **{**times, **fields})
            if self._insert_job(record):
                return record
        raise StatusConflict(f"could not record a new attempt of {name} in run {run_id}")

    @traced("joblog.update_job")
    def update_job(self, record: JobRecord, **changes: Any) -> JobRecord:
        """Apply `changes` to a recorded attempt; a new status must move forwards.

        Returns the stored record. Raises StatusConflict when the status would go backwards or
        the attempt is already final (another writer got there first).
        """
        fixed = IDENTITY.intersection(changes)
        if fixed:
            raise TypeError(f"cannot change {', '.join(sorted(fixed))} of a job record")
        new_status = changes.get("status")
        if new_status is not None:
            if new_status not in STATUSES:
                raise UserError(f"unknown job status {new_status!r}: use one of {', '.join(STATUSES)}")
            if new_status == record.status:
                del changes["status"]
                new_status = None
        if new_status in TERMINAL_STATUSES and "stopped_at" not in changes:
            changes["stopped_at"] = now_iso()
        if new_status == "RUNNING" and not record.started_at and "started_at" not in changes:
            changes["started_at"] = now_iso()
        if "outputs" in changes:
            changes["outputs"] = tuple(changes["outputs"])
        allowed_from = (
            frozenset(s for s in STATUSES if can_move(s, new_status)) if new_status
            else frozenset(s for s in STATUSES if s not in TERMINAL_STATUSES)
        )
        stored = self._update_job(record.run_id, record.job, record.attempt, changes, allowed_from)
        if stored is None:
            current = self._get_job(record.run_id, record.job, record.attempt)
            was = current.status if current else "missing"
            raise StatusConflict(
                f"{record.job} attempt {record.attempt} of run {record.run_id}: "
                f"cannot change {was} with {changes}")
        return stored

    @traced("joblog.get_job")
    def get_job(self, run_id: str, job: str, attempt: int) -> JobRecord | None:
        """One attempt of one job, or None."""
        return self._get_job(run_id, job, attempt)

    @traced("joblog.jobs")
    def jobs(self, run_id: str) -> list[JobRecord]:
        """Every attempt of every job of a run: plan, renders by index, encode; attempts in order."""
        order = {"plan": 0, "render": 1, "encode": 2}
        return sorted(self._jobs(run_id),
                      key=lambda r: (order[r.kind], r.index if r.index is not None else -1, r.attempt))

    @traced("joblog.latest_jobs")
    def latest_jobs(self, run_id: str) -> list[JobRecord]:
        """The last attempt of every job of a run, in `jobs` order."""
        latest: dict[str, JobRecord] = {}
        for record in self.jobs(run_id):
            latest[record.job] = record
        return list(latest.values())

    def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Release connections; the job log is not used afterwards."""

    def release_thread(self) -> None:  # noqa: B027 - most backends hold nothing per thread
        """Release what the calling thread opened (a thread that ends calls it)."""

    # -- primitives a backend implements; each is atomic ------------------------------------

    @abstractmethod
    def _put_run(self, run: RunRecord) -> None: ...

    @abstractmethod
    def _get_run(self, run_id: str) -> RunRecord | None: ...

    def _swap_run(self, run: RunRecord, *, expect: RunRecord | None) -> bool:
        """Write `run` only if the stored record is still `expect` (None: there is none yet);
        whether it was written. Backends compare and swap; this fallback, for a backend that
        cannot, writes whatever is there (the last writer wins)."""
        self._put_run(run)
        return True

    @abstractmethod
    def _list_runs(self) -> list[RunRecord]: ...

    @abstractmethod
    def _insert_job(self, record: JobRecord) -> bool:
        """Store a new attempt; False (and no change) when that attempt is already recorded."""

    @abstractmethod
    def _update_job(self, run_id: str, job: str, attempt: int, changes: Mapping[str, Any],
                    allowed_from: frozenset[str]) -> JobRecord | None:
        """Apply `changes` only if the stored status is in `allowed_from`; the new record, or None."""

    @abstractmethod
    def _get_job(self, run_id: str, job: str, attempt: int) -> JobRecord | None: ...

    @abstractmethod
    def _jobs(self, run_id: str) -> list[JobRecord]: ...

    def _attempts(self, run_id: str, job: str) -> list[JobRecord]:
        """Every attempt of one job of the run; a backend that can look one job up by its key
        does (a render job's start must not read the records of every chunk)."""
        return [r for r in self._jobs(run_id) if r.job == job]

    @abstractmethod
    def _get_lease(self, run_id: str) -> Lease | None: ...

    @abstractmethod
    def _swap_lease(self, run_id: str, lease: Lease, *, expect: str | None) -> bool:
        """Store `lease` only if the stored lease's token is `expect` (None: there is none);
        the check and the write are one atomic step. True when stored."""

    @abstractmethod
    def _drop_lease(self, run_id: str, token: str) -> None:
        """Delete the run's lease if its token is `token`."""
