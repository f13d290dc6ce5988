"""Who ran what, when, with what result; a backend is chosen by URL.

`open_joblog("sqlite:///framefarm-data/joblog.sqlite3")`, `open_joblog("memory://test")`. Each
URL scheme maps to a class imported only when used, so a cloud SDK is needed only for its scheme.
"""

from __future__ import annotations

from framefarm.errors import UserError
from framefarm.joblog._base import JobLog, StatusConflict, now_iso
from framefarm.storage import Backend, default_scheme, load_backend, reach

__all__ = ["BACKENDS", "JobLog", "StatusConflict", "now_iso", "open_joblog", "url_reach"]

BACKENDS: dict[str, Backend] = {
    "sqlite": Backend("framefarm.joblog.sqlite", "SqliteJobLog", None, "sqlite:///path"),
    "memory": Backend("framefarm.joblog.memory", "MemoryJobLog", None, "memory://name",
                      "process"),
    "dynamodb": Backend("framefarm.joblog.dynamodb", "DynamoDBJobLog", "aws", "dynamodb://table",
                        "anywhere"),
    # A new backend is one line here plus a module whose class has `from_url(url)`.
}


def url_reach(url: str) -> str:
    """Who can use the job log at `url` (storage.REACHES)."""
    return reach(BACKENDS, url, default="sqlite")


def open_joblog(url: str) -> JobLog:
    """The job log at `url`: sqlite:///relative.db, sqlite:////abs.db, a bare path, memory://name.

    SQLite URLs follow SQLAlchemy: three slashes then a path relative to the current folder, or
    four slashes for an absolute path.
    """
    if not url:
        raise UserError("no job log URL given: use sqlite:///path or memory://name")
    scheme = default_scheme(url, "sqlite")
    joblog: JobLog = load_backend(BACKENDS, scheme, url=url, what="job log").from_url(url)
    return joblog
