"""Who ran what, when, with what result; a backend is chosen by URL.

`open_joblog("sqlite:///framefarm-data/joblog.sqlite3")`, `open_joblog("memory://test")`, or a
bare path. The registry has storage's shape (framefarm.storage): each built-in URL scheme is one
line of `_BUILT_IN` naming its class, imported only when used (so a cloud SDK is needed only for
its scheme); another package adds a scheme through the `framefarm.joblogs` entry-point group
(`[project.entry-points."framefarm.joblogs"] NAME = "pkg.module:JobLogClass"`), read only for
a scheme that is no built-in's. A backend class has `from_url(url)` and declares who can reach
it (`JobLog.reach`).
"""

from __future__ import annotations

from framefarm.errors import UserError
from framefarm.joblog._base import JobLog, StatusConflict, now_iso
from framefarm.storage import Backend, Registry

__all__ = ["BACKENDS", "ENTRY_POINT_GROUP", "JobLog", "StatusConflict", "now_iso", "open_joblog",
           "url_reach"]

ENTRY_POINT_GROUP = "framefarm.joblogs"

_BUILT_IN: dict[str, Backend] = {
    "sqlite": Backend.of("framefarm.joblog.sqlite:SqliteJobLog", "sqlite:///path"),
    "memory": Backend.of("framefarm.joblog.memory:MemoryJobLog", "memory://name"),
    "dynamodb": Backend.of("framefarm.joblog.dynamodb:DynamoDBJobLog", "dynamodb://table",
                           extra="aws"),
}
"""Each built-in scheme's backend class, as "module:Class"; a new one is one line here."""

BACKENDS = _BUILT_IN
"""The built-in schemes (a name kept for callers that read or extend the table)."""

_REGISTRY = Registry("job log", built_in=_BUILT_IN, group=ENTRY_POINT_GROUP, bare="sqlite",
                     base=JobLog)


def url_reach(url: str) -> str:
    """Who can use the job log at `url` (storage.REACHES)."""
    return _REGISTRY.reach(url)


def open_joblog(url: str) -> JobLog:
    """The job log at `url`: sqlite:///relative.db, sqlite:////abs.db, a bare path, memory://name,
    dynamodb://table, or a scheme another package registers.

    SQLite URLs follow SQLAlchemy: three slashes then a path relative to the current folder, or
    four slashes for an absolute path.
    """
    if not url:
        raise UserError("no job log URL given: use sqlite:///path or memory://name")
    joblog: JobLog = _REGISTRY.backend_class(url).from_url(url)
    return joblog
