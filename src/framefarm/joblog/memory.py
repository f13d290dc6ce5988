"""The job log in this process's memory, for tests and single-process runs.

Job logs are named by URL, so every `MemoryJobLog` of one name in a process shares its records,
and `open_joblog("memory://x")` returns one object each time. Nothing crosses processes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from framefarm.joblog._base import JobLog
from framefarm.model import JobRecord, Lease, RunRecord


class _Book:
    """The records of one named memory job log, and the lock that makes each change atomic."""

    def __init__(self) -> None:
        self.runs: dict[str, RunRecord] = {}
        self.jobs: dict[tuple[str, str, int], JobRecord] = {}
        self.leases: dict[str, Lease] = {}
        self.lock = threading.Lock()


_books: dict[str, _Book] = {}
_opened: dict[str, MemoryJobLog] = {}
_registry_lock = threading.RLock()  # __init__ takes it too


class MemoryJobLog(JobLog):
    """Records in dicts shared by name within the process."""

    reach = "process"  # dicts of this process: worker processes cannot share them

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.url = f"memory://{name}"
        with _registry_lock:
            self._book = _books.setdefault(name, _Book())

    @classmethod
    def open(cls, name: str = "") -> MemoryJobLog:
        """The process's one MemoryJobLog called `name`."""
        with _registry_lock:
            if name not in _opened:
                _opened[name] = cls(name)
            return _opened[name]

    @classmethod
    def from_url(cls, url: str) -> MemoryJobLog:
        """`memory://name`."""
        return cls.open(url.removeprefix("memory://"))

    def clear(self) -> None:
        """Forget every run and job."""
        with self._book.lock:
            self._book.runs.clear()
            self._book.jobs.clear()
            self._book.leases.clear()

    def __repr__(self) -> str:
        return f"MemoryJobLog({self.name!r})"

    def __reduce__(self) -> tuple[object, ...]:
        return (MemoryJobLog, (self.name,))

    # -- primitives ---------------------------------------------------------------------------

    def _put_run(self, run: RunRecord) -> None:
        stored = _copy(run)  # as SQLite or DynamoDB would: a copy, and the plan must be JSON-safe
        with self._book.lock:
            self._book.runs[run.run_id] = stored

    def _swap_run(self, run: RunRecord, *, expect: RunRecord | None) -> bool:
        stored = _copy(run)
        with self._book.lock:
            if self._book.runs.get(run.run_id) != expect:
                return False
            self._book.runs[run.run_id] = stored
        return True

    def _get_run(self, run_id: str) -> RunRecord | None:
        with self._book.lock:
            run = self._book.runs.get(run_id)
        return _copy(run) if run is not None else None

    def _list_runs(self) -> list[RunRecord]:
        with self._book.lock:
            runs = list(self._book.runs.values())
        return [_copy(run) for run in runs]

    def _insert_job(self, record: JobRecord) -> bool:
        key = (record.run_id, record.job, record.attempt)
        with self._book.lock:
            if key in self._book.jobs:
                return False
            self._book.jobs[key] = record.evolve(outputs=tuple(record.outputs))
        return True

    def _update_job(self, run_id: str, job: str, attempt: int, changes: Mapping[str, Any],
                    allowed_from: frozenset[str]) -> JobRecord | None:
        key = (run_id, job, attempt)
        with self._book.lock:
            current = self._book.jobs.get(key)
            if current is None or current.status not in allowed_from:
                return None
            updated = current.evolve(**changes)
            self._book.jobs[key] = updated
        return updated

    def _get_job(self, run_id: str, job: str, attempt: int) -> JobRecord | None:
        with self._book.lock:
            return self._book.jobs.get((run_id, job, attempt))

    def _jobs(self, run_id: str) -> list[JobRecord]:
        with self._book.lock:
            return [r for r in self._book.jobs.values() if r.run_id == run_id]

    def _get_lease(self, run_id: str) -> Lease | None:
        with self._book.lock:
            return self._book.leases.get(run_id)

    def _swap_lease(self, run_id: str, lease: Lease, *, expect: str | None) -> bool:
        with self._book.lock:
            current = self._book.leases.get(run_id)
            if (current.token if current else None) != expect:
                return False
            self._book.leases[run_id] = lease
        return True

    def _drop_lease(self, run_id: str, token: str) -> None:
        with self._book.lock:
            current = self._book.leases.get(run_id)
            if current is not None and current.token == token:
                del self._book.leases[run_id]


def _copy(run: RunRecord) -> RunRecord:
    """A copy whose plan the caller may change without changing the stored one."""
    return replace(run, plan=json.loads(json.dumps(dict(run.plan))),
                   runner_ids=dict(run.runner_ids), settings=dict(run.settings))
