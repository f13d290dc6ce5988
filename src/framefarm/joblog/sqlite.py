"""The job log in one SQLite file, shared by every worker process on one machine.

WAL mode lets readers run while one writer writes; every write is one statement, so a writer
that must wait does so in SQLite's busy handler instead of failing. A status change is one
`UPDATE ... WHERE status IN (...)`, the SQL form of a DynamoDB conditional write: no update is
lost and none goes backwards. WAL needs shared memory, so the file must be on a local disk (not
NFS or EFS); across machines use DynamoDB.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from framefarm import config
from framefarm.errors import UserError
from framefarm.joblog._base import JobLog
from framefarm.model import JobRecord, Lease, RunRecord

BUSY_TIMEOUT_SECONDS = 30.0

_LEASES = """
CREATE TABLE IF NOT EXISTS leases (
    run_id TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    since TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL DEFAULT '',
    plan TEXT NOT NULL DEFAULT '{}',
    output TEXT NOT NULL DEFAULT '',
    runner_ids TEXT NOT NULL DEFAULT '{}',
    runner TEXT NOT NULL DEFAULT '',
    settings TEXT NOT NULL DEFAULT '{}',
    cancelled_at TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS jobs (
    run_id TEXT NOT NULL,
    job TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    kind TEXT NOT NULL,
    idx INTEGER,
    status TEXT NOT NULL,
    submitted_at TEXT NOT NULL DEFAULT '',
    started_at TEXT NOT NULL DEFAULT '',
    stopped_at TEXT NOT NULL DEFAULT '',
    host TEXT NOT NULL DEFAULT '',
    frames INTEGER NOT NULL DEFAULT 0,
    outputs TEXT NOT NULL DEFAULT '[]',
    error TEXT NOT NULL DEFAULT '',
    trace_id TEXT NOT NULL DEFAULT '',
    runner_id TEXT NOT NULL DEFAULT '',
    heartbeat_at TEXT NOT NULL DEFAULT '',
    sha256 TEXT NOT NULL DEFAULT '',
    bytes INTEGER NOT NULL DEFAULT 0,
    plan_hash TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, job, attempt)
) WITHOUT ROWID;
""" + _LEASES + "PRAGMA user_version = 3;\n"
# Migrations from each older schema version to the next (columns are only ever added).
_MIGRATIONS = {
    1: "ALTER TABLE runs ADD COLUMN runner_ids TEXT NOT NULL DEFAULT '{}'; PRAGMA user_version = 2;",
    2: "ALTER TABLE runs ADD COLUMN runner TEXT NOT NULL DEFAULT '';"
       "ALTER TABLE runs ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';"
       "ALTER TABLE runs ADD COLUMN cancelled_at TEXT NOT NULL DEFAULT '';"
       "ALTER TABLE jobs ADD COLUMN heartbeat_at TEXT NOT NULL DEFAULT '';"
       "ALTER TABLE jobs ADD COLUMN sha256 TEXT NOT NULL DEFAULT '';"
       "ALTER TABLE jobs ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;"
       "ALTER TABLE jobs ADD COLUMN plan_hash TEXT NOT NULL DEFAULT '';"
       + _LEASES + "PRAGMA user_version = 3;",
}

# JobRecord field -> column; `index` is an SQL keyword.
_COLUMNS = {f.name: ("idx" if f.name == "index" else f.name) for f in fields(JobRecord)}

# Connections inherited through fork(): SQLite forbids using (or closing) them in the child, so
# they are kept here, untouched, instead of being closed when garbage-collected.
_inherited: list[sqlite3.Connection] = []


class SqliteJobLog(JobLog):
    """The job log in the SQLite file at `path`; safe for many threads and processes.

    Each thread of each process opens its own connection on first use, and again after a fork.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(os.path.abspath(Path(path).expanduser()))
        self.url = "sqlite:///" + str(self.path)
        self._local = threading.local()
        self._connections: list[tuple[int, sqlite3.Connection]] = []
        self._generation = 0
        # Create the file and tables now, so a bad path is reported when the log is opened.
        self._db()

    @classmethod
    def from_url(cls, url: str) -> SqliteJobLog:
        """SQLAlchemy's form: sqlite:///relative.db (from the current folder),
        sqlite:////abs/path.db; or a bare path."""
        if not url.startswith("sqlite:"):
            return cls(url)
        rest = url.removeprefix("sqlite:")
        if not rest.startswith("///") or rest == "///" or rest == "///:memory:":
            raise UserError(f"bad job log URL {url!r}: use sqlite:///relative/path.db or "
                            "sqlite:////absolute/path.db (memory://name for one in memory)")
        return cls(rest[3:])

    def __repr__(self) -> str:
        return f"SqliteJobLog({str(self.path)!r})"

    def __reduce__(self) -> tuple[object, ...]:
        return (SqliteJobLog, (self.path,))

    def close(self) -> None:
        """Close every connection this process opened; a later use opens a new one."""
        self._generation += 1
        pid = os.getpid()
        connections, self._connections = self._connections, []
        for owner, connection in connections:
            if owner == pid:
                connection.close()

    def release_thread(self) -> None:
        """Close the calling thread's connection (a heartbeat thread that ends calls it)."""
        local = self._local
        connection = getattr(local, "connection", None)
        if connection is None or local.pid != os.getpid():
            return
        local.connection = None
        self._connections = [(p, c) for p, c in self._connections if c is not connection]
        connection.close()

    # -- connections --------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use and after fork() or close()."""
        local = self._local
        pid = os.getpid()
        connection: sqlite3.Connection | None = getattr(local, "connection", None)
        if connection is not None and local.pid == pid and local.generation == self._generation:
            return connection
        if connection is not None and local.pid != pid:
            _inherited.append(connection)
        connection = self._connect()
        local.connection, local.pid, local.generation = connection, pid, self._generation
        self._connections.append((pid, connection))
        return connection

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS,
                                         isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as e:
            raise self._cannot_open(e) from None
        try:
            connection.row_factory = sqlite3.Row
            # The busy timeout applies to these too: many processes may create the file at once.
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version < 1:
                connection.executescript(_SCHEMA)
            while version in _MIGRATIONS:
                connection.executescript(_MIGRATIONS[version])
                version += 1
        except sqlite3.OperationalError as e:
            connection.close()
            if "locked" in str(e) or "busy" in str(e):
                raise  # another process held the file for longer than the busy timeout
            raise self._cannot_open(e) from None
        except sqlite3.DatabaseError as e:  # e.g. "file is not a database"
            connection.close()
            raise self._cannot_open(e) from None
        return connection

    def _cannot_open(self, error: Exception) -> UserError:
        reason = getattr(error, "strerror", None) or str(error)
        return UserError(f"cannot open job log {self.path} ({reason}): use a file you can "
                         f"write to on a local disk, with --joblog or {config.JOBLOG}")

    # -- primitives ---------------------------------------------------------------------------

    def _put_run(self, run: RunRecord) -> None:
        self._db().execute(
            "INSERT INTO runs (run_id, created_at, plan, output, runner_ids, runner, settings, "
            "cancelled_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (run_id) DO UPDATE SET created_at = excluded.created_at, "
            "plan = excluded.plan, output = excluded.output, runner_ids = excluded.runner_ids, "
            "runner = excluded.runner, settings = excluded.settings, "
            "cancelled_at = excluded.cancelled_at",
            (run.run_id, run.created_at, json.dumps(dict(run.plan), sort_keys=True), run.output,
             json.dumps(dict(run.runner_ids), sort_keys=True), run.runner,
             json.dumps(dict(run.settings), sort_keys=True), run.cancelled_at))

    def _get_run(self, run_id: str) -> RunRecord | None:
        row = self._db().execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return _run(row) if row is not None else None

    def _list_runs(self) -> list[RunRecord]:
        return [_run(row) for row in self._db().execute("SELECT * FROM runs")]

    def _insert_job(self, record: JobRecord) -> bool:
        values = _values(record.to_dict())
        columns = ", ".join(values)
        marks = ", ".join("?" * len(values))
        cursor = self._db().execute(
            f"INSERT INTO jobs ({columns}) VALUES ({marks}) "
            "ON CONFLICT (run_id, job, attempt) DO NOTHING", tuple(values.values()))
        return cursor.rowcount == 1

    def _update_job(self, run_id: str, job: str, attempt: int, changes: Mapping[str, Any],
                    allowed_from: frozenset[str]) -> JobRecord | None:
        values = _values(changes)
        assignments = ", ".join(f"{column} = ?" for column in values) or "status = status"
        statuses = sorted(allowed_from)
        # One statement: the check and the write cannot be split by another writer.
        rows = self._db().execute(
            f"UPDATE jobs SET {assignments} WHERE run_id = ? AND job = ? AND attempt = ? "
            f"AND status IN ({', '.join('?' * len(statuses))}) RETURNING *",
            (*values.values(), run_id, job, attempt, *statuses)).fetchall()
        return _job(rows[0]) if rows else None

    def _get_job(self, run_id: str, job: str, attempt: int) -> JobRecord | None:
        row = self._db().execute(
            "SELECT * FROM jobs WHERE run_id = ? AND job = ? AND attempt = ?",
            (run_id, job, attempt)).fetchone()
        return _job(row) if row is not None else None

    def _jobs(self, run_id: str) -> list[JobRecord]:
        return [_job(row) for row in
                self._db().execute("SELECT * FROM jobs WHERE run_id = ?", (run_id,))]

    def _get_lease(self, run_id: str) -> Lease | None:
        row = self._db().execute("SELECT * FROM leases WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        return Lease(run_id=row["run_id"], token=row["token"], host=row["host"], pid=row["pid"],
                     since=row["since"], expires_at=row["expires_at"])

    def _swap_lease(self, run_id: str, lease: Lease, *, expect: str | None) -> bool:
        values = (lease.token, lease.host, lease.pid, lease.since, lease.expires_at)
        if expect is None:
            cursor = self._db().execute(
                "INSERT INTO leases (run_id, token, host, pid, since, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING", (run_id, *values))
        else:
            cursor = self._db().execute(
                "UPDATE leases SET token = ?, host = ?, pid = ?, since = ?, expires_at = ? "
                "WHERE run_id = ? AND token = ?", (*values, run_id, expect))
        return cursor.rowcount == 1

    def _drop_lease(self, run_id: str, token: str) -> None:
        self._db().execute("DELETE FROM leases WHERE run_id = ? AND token = ?", (run_id, token))


def _values(data: Mapping[str, Any]) -> dict[str, Any]:
    """Column -> SQL value for JobRecord fields; TypeError on a field JobRecord does not have."""
    unknown = set(data) - _COLUMNS.keys()
    if unknown:
        raise TypeError(f"job records have no field {', '.join(sorted(unknown))}")
    return {_COLUMNS[name]: json.dumps(list(value)) if name == "outputs" else value
            for name, value in data.items()}


def _job(row: sqlite3.Row) -> JobRecord:
    data = {name: row[column] for name, column in _COLUMNS.items()}
    data["outputs"] = tuple(json.loads(data["outputs"]))
    return JobRecord(**data)


def _run(row: sqlite3.Row) -> RunRecord:
    return RunRecord(run_id=row["run_id"], created_at=row["created_at"],
                     plan=json.loads(row["plan"]), output=row["output"],
                     runner_ids=json.loads(row["runner_ids"]), runner=row["runner"],
                     settings=json.loads(row["settings"]), cancelled_at=row["cancelled_at"])
