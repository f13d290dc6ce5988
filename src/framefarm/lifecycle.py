"""A run's life as the job log tells it: which segments are verified (resume renders the rest),
which attempts are lost (silent for longer than their timeout, or their process gone), and
closing what a stopped run left open."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from framefarm._procs import process_alive
from framefarm.errors import SegmentRejected, StorageKeyError
from framefarm.integrity import SegmentDigest, check_segment
from framefarm.joblog import JobLog, StatusConflict
from framefarm.model import TERMINAL_STATUSES, JobKind, JobRecord, Plan, job_name
from framefarm.steps._keys import segment_key
from framefarm.storage import Storage
from framefarm.video import scratch_file

NOT_STARTED = frozenset({"SUBMITTED", "PENDING", "RUNNABLE"})
"""Statuses of an attempt a runner has queued and no container has started yet."""

HEARTBEAT_SECONDS = 5.0
"""How often a running attempt writes its heartbeat (and frames done) to the job log."""
LOST_AFTER_SECONDS = 60.0
"""An attempt whose heartbeat is older than this is lost: its process is gone."""
PID_PREFIX = "pid:"
"""The runner id of a job the local runner ran in process `pid:{pid}` of its host."""


def expected_segments(records: Iterable[JobRecord]) -> dict[int, SegmentDigest]:
    """Chunk index -> what its latest successful render attempt recorded of its segment."""
    found: dict[int, tuple[int, SegmentDigest]] = {}
    for r in records:
        if r.kind != "render" or r.status != "SUCCEEDED" or r.index is None or not r.sha256:
            continue
        if r.index not in found or found[r.index][0] < r.attempt:
            found[r.index] = (r.attempt, SegmentDigest(sha256=r.sha256, bytes=r.bytes,
                                                       frames=r.frames, plan_hash=r.plan_hash))
    return {index: digest for index, (_, digest) in found.items()}


def chunks_to_render(plan: Plan, plan_hash: str, *, storage: Storage,
                     joblog: JobLog) -> list[int]:
    """The chunks of `plan` with no verified segment: no successful render of this plan, or a
    stored segment that does not match its record (each present segment is hashed)."""
    expected = expected_segments(joblog.jobs(plan.run_id))
    todo = []
    for chunk in plan.chunks():
        key = segment_key(plan.run_id, chunk.index)
        digest = expected.get(chunk.index)
        if digest is None or digest.plan_hash != plan_hash or not storage.exists(key):
            todo.append(chunk.index)
            continue
        local = storage.local_path(key)
        fetched = None
        try:
            if local is None:
                local = fetched = storage.get_file(key, scratch_file(".mp4"))
            check_segment(local, chunk=chunk, expected=digest, plan=plan_hash, key=key,
                          run_id=plan.run_id)
        except (SegmentRejected, StorageKeyError):
            todo.append(chunk.index)
        finally:
            if fetched is not None:
                fetched.unlink(missing_ok=True)
    return todo


def _age(stamp: str, now: datetime) -> float:
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return (now - when).total_seconds()


def lost(record: JobRecord, *, now: datetime | None = None,
         after: float = LOST_AFTER_SECONDS) -> bool:
    """True when a running attempt has said nothing for longer than `after` seconds."""
    if record.status != "RUNNING":
        return False
    if record.runner_id.startswith(PID_PREFIX) and record.host == socket.gethostname():
        pid = record.runner_id.removeprefix(PID_PREFIX)
        if pid.isdigit() and not process_alive(int(pid)):
            return True
    last = record.heartbeat_at or record.started_at
    return bool(last) and _age(last, now or datetime.now(UTC)) > after


def lost_reason(record: JobRecord) -> str:
    """The error of an attempt found lost."""
    last = record.heartbeat_at or record.started_at
    where = record.host or "an unknown host"
    if record.runner_id.startswith(PID_PREFIX):
        where = f"{where} ({record.runner_id.replace(PID_PREFIX, 'pid ')})"
    return (f"lost: {record.job} attempt {record.attempt} on {where} has not sent a heartbeat "
            f"since {last}; its process is gone")


def with_lost(records: Sequence[JobRecord]) -> list[JobRecord]:
    """The records as a reader should see them: a lost attempt shows FAILED with why."""
    now = datetime.now(UTC)
    return [r.evolve(status="FAILED", error=lost_reason(r)) if lost(r, now=now) else r
            for r in records]


def close_open_attempts(joblog: JobLog, run_id: str, *, status: str, error: str,
                        jobs: Iterable[str] | None = None) -> list[JobRecord]:
    """Give every attempt of the run (or of `jobs`) that is not final the status `status`;
    returns the records changed. One that finished meanwhile is left as it is."""
    wanted = set(jobs) if jobs is not None else None
    changed = []
    for record in joblog.jobs(run_id):
        if record.status in TERMINAL_STATUSES or (wanted is not None and record.job not in wanted):
            continue
        with contextlib.suppress(StatusConflict):  # it finished meanwhile
            changed.append(joblog.update_job(record, status=status, error=error))
    return changed


def recorded_attempt(joblog: JobLog, *, run_id: str, kind: JobKind, index: int | None,
                     attempt: int | None, job_id: str) -> int | None:
    """The job-log attempt a job records when its runner numbers attempts (AWS Batch's
    AWS_BATCH_JOB_ATTEMPT): the runner's own, unless that number already belongs to another
    attempt (a resumed run's jobs count from 1 again); then None, and the job log numbers it,
    taking over the attempt that `resume` recorded SUBMITTED. `job_id`: the runner's id of this
    job ("" when the runner's attempt is always this job's own)."""
    if attempt is None or not job_id:
        return attempt
    existing = joblog.get_job(run_id, job_name(kind, index), attempt)
    if existing is None or (existing.status in NOT_STARTED
                            and existing.runner_id in ("", job_id)):
        return attempt
    return None
