"""The job log in one SQLite file, shared by every worker process on one machine.

WAL mode lets readers run while one writer writes; every write is one statement, so a writer
that must wait does so in SQLite's busy handler instead of failing, and a statement still busy
after that is tried again, with backoff, for up to PATIENCE_SECONDS in all. A status change is
one `UPDATE ... WHERE status IN (...)`, the SQL form of a DynamoDB conditional write: no update
is lost and none goes backwards. WAL needs shared memory, so the file must be on a local disk
(not NFS or EFS); across machines use DynamoDB.

Setting a new file up (WAL mode, the tables) and migrating an older one happen under an flock
on a file beside it (`joblog.sqlite3-lock`), one process at a time: `PRAGMA journal_mode`
does not wait in the busy handler, so processes that create the file at once would otherwise
fail with "database is locked". A migration is one transaction: all of it or none.

Faults: a file that is not a job log, or a path that cannot be one, is a UserError when the log
is opened; a disk that is full or failing, or a file that cannot be written, is a TransientError
(a retry may fix it), each one line naming the file and the cause.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from framefarm import config
from framefarm.errors import TransientError, UserError
from framefarm.joblog._base import JobLog
from framefarm.model import JobRecord, Lease, RunRecord

_T = TypeVar("_T")

BUSY_TIMEOUT_SECONDS = 30.0
"""How long one statement waits in SQLite's busy handler while another process writes."""
PATIENCE_SECONDS = 120.0
"""How long a statement is tried again, in all, while the file stays busy (backoff, jitter)."""

_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
# Faults of the disk or the file's permissions: another try (here, or on another host) may pass.
_IO = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY,
                 sqlite3.SQLITE_PERM, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PROTOCOL,
                 sqlite3.SQLITE_NOLFS})
_DAMAGED = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
_IO_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EDQUOT})

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
    exit_code INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, job, attempt)
) WITHOUT ROWID;
""" + _LEASES + "PRAGMA user_version = 4;\n"
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
    3: "ALTER TABLE jobs ADD COLUMN exit_code INTEGER NOT NULL DEFAULT 0; PRAGMA user_version = 4;",
}
SCHEMA_VERSION = max(_MIGRATIONS) + 1

# JobRecord field -> column; `index` is an SQL keyword.
_COLUMNS = {f.name: ("idx" if f.name == "index" else f.name) for f in fields(JobRecord)}

# Connections inherited through fork(): SQLite forbids using (or closing) them in the child, so
# they are kept here, untouched, instead of being closed when garbage-collected.
_inherited: list[sqlite3.Connection] = []


class SqliteJobLog(JobLog):
    """The job log in the SQLite file at `path`; safe for many threads and processes.

    Each thread of each process opens its own connection on first use, and again after a fork.
    `busy_timeout` is how long one statement waits for another process's write, `patience` how
    long, in all, a busy statement is tried again before a TransientError says so.
    """

    reach = "machine"  # WAL shares memory between the processes of one machine (no NFS, EFS)

    def __init__(self, path: str | Path, *, busy_timeout: float = BUSY_TIMEOUT_SECONDS,
                 patience: float = PATIENCE_SECONDS) -> None:
        self.path = Path(os.path.abspath(Path(path).expanduser()))
        self.url = "sqlite:///" + str(self.path)
        self.busy_timeout = busy_timeout
        self.patience = patience
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
        return (_reopen, (self.path, self.busy_timeout, self.patience))

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
            connection = sqlite3.connect(self.path, timeout=self.busy_timeout,
                                         isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as e:
            raise self._cannot_open(e) from None
        try:
            connection.row_factory = sqlite3.Row
            # Reading the version reads the header, which puts the connection in WAL mode when
            # the file is in WAL mode already: a job log set up before needs no lock.
            version = self._patiently(lambda: _version(connection), fault=self._cannot_open)
            mode = self._patiently(lambda: _pragma(connection, "journal_mode"),
                                   fault=self._cannot_open)
            if version < SCHEMA_VERSION or mode != "wal":
                with self._setup_lock():
                    self._set_up(connection)
            self._patiently(lambda: connection.execute("PRAGMA synchronous = NORMAL"),  # WAL: safe
                            fault=self._cannot_open)
        except BaseException:
            connection.close()
            raise
        return connection

    def _set_up(self, connection: sqlite3.Connection) -> None:
        """WAL mode, then the tables or the migrations the file needs, in one transaction."""
        mode = self._patiently(lambda: _pragma(connection, "journal_mode = WAL"),
                               fault=self._cannot_open)
        if mode != "wal":
            raise self._cannot_open(sqlite3.OperationalError(f"it stays in {mode} journal mode"))

        def migrate() -> None:
            connection.execute("BEGIN IMMEDIATE")
            try:
                version = _version(connection)  # again, in the transaction
                script = _SCHEMA if version < 1 else ""
                while version in _MIGRATIONS:
                    script += _MIGRATIONS[version]
                    version += 1
                # Statement by statement: executescript would commit the transaction first.
                for statement in filter(None, (s.strip() for s in script.split(";"))):
                    connection.execute(statement)
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    with suppress(sqlite3.Error):
                        connection.execute("ROLLBACK")
                raise

        self._patiently(migrate, fault=self._cannot_open)

    @contextmanager
    def _setup_lock(self) -> Iterator[None]:
        """One process at a time sets a job log up, holding an flock on a file beside it (not on
        the database: closing another descriptor of it would drop SQLite's own locks)."""
        try:
            fd = os.open(f"{self.path}-lock", os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise self._cannot_open(e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # the lock goes with it

    def _patiently(self, statement: Callable[[], _T], *,
                   fault: Callable[[sqlite3.Error], Exception] | None = None) -> _T:
        """`statement()`, tried again while the file is busy, with backoff and jitter, for up to
        `patience` seconds in all; any other SQLite error becomes `fault(error)`."""
        deadline = time.monotonic() + self.patience
        delay = 0.05
        while True:
            try:
                return statement()
            except sqlite3.Error as e:
                if _code(e) not in _BUSY:
                    raise (fault or self._fault)(e) from None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TransientError(
                        f"job log {self.path} is busy: another process kept it locked for more "
                        f"than {self.patience:g} s ({e}); try again") from None
                # Jitter: processes that found it busy together do not come back together.
                time.sleep(min(left, random.uniform(0.5, 1.0) * delay))
                delay = min(delay * 2, 5.0)

    def _fault(self, error: sqlite3.Error) -> Exception:
        """What a failed statement raises: one line for a fault of the disk or the file."""
        code = _code(error)
        if code == sqlite3.SQLITE_FULL:
            return TransientError(f"job log {self.path}: {error}; free space on its disk and "
                                  "try again")
        if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM):
            return TransientError(f"job log {self.path}: {error}; make the file, its folder and "
                                  "its file system writable and try again")
        if code in _IO:
            return TransientError(f"job log {self.path}: {error}; check its disk and try again")
        if code in _DAMAGED:
            return UserError(f"job log {self.path} is damaged ({error}): move it aside or use "
                             f"another with --joblog or {config.JOBLOG}")
        return error  # a fault of framefarm's own: it keeps its traceback

    def _cannot_open(self, error: Exception) -> Exception:
        """What a failed open raises: a full or failing disk may pass on a retry (TransientError),
        a path that cannot be a job log will not (UserError)."""
        if isinstance(error, OSError) and error.errno in _IO_ERRNOS:
            return TransientError(f"job log {self.path}: {error.strerror}; check its disk and "
                                  "try again")
        if isinstance(error, sqlite3.Error) and _code(error) in (sqlite3.SQLITE_FULL,
                                                                 sqlite3.SQLITE_IOERR):
            return self._fault(error)
        reason = getattr(error, "strerror", None) or str(error)
        return UserError(f"cannot open job log {self.path} ({reason}): use a file you can "
                         f"write to on a local disk, with --joblog or {config.JOBLOG}")

    def _rows(self, sql: str, parameters: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """The rows of one statement (a transaction of its own), run patiently."""
        return self._patiently(lambda: self._db().execute(sql, parameters).fetchall())

    def _change(self, sql: str, parameters: Sequence[Any]) -> int:
        """Run one writing statement patiently; how many rows it changed."""
        return self._patiently(lambda: self._db().execute(sql, parameters).rowcount)

    # -- primitives ---------------------------------------------------------------------------

    def _put_run(self, run: RunRecord) -> None:
        self._change(
            f"INSERT INTO runs ({', '.join(_RUN_COLUMNS)}) VALUES ({', '.join('?' * 8)}) "
            "ON CONFLICT (run_id) DO UPDATE SET created_at = excluded.created_at, "
            "plan = excluded.plan, output = excluded.output, runner_ids = excluded.runner_ids, "
            "runner = excluded.runner, settings = excluded.settings, "
            "cancelled_at = excluded.cancelled_at", _run_row(run))

    def _swap_run(self, run: RunRecord, *, expect: RunRecord | None) -> bool:
        if expect is None:
            return self._change(
                f"INSERT INTO runs ({', '.join(_RUN_COLUMNS)}) VALUES ({', '.join('?' * 8)}) "
                "ON CONFLICT (run_id) DO NOTHING", _run_row(run)) == 1
        sets = ", ".join(f"{c} = ?" for c in _RUN_COLUMNS[1:])
        same = " AND ".join(f"{c} IS ?" for c in _RUN_COLUMNS[1:])
        return self._change(f"UPDATE runs SET {sets} WHERE run_id = ? AND {same}",
                            (*_run_row(run)[1:], run.run_id, *_run_row(expect)[1:])) == 1

    def _get_run(self, run_id: str) -> RunRecord | None:
        rows = self._rows("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        return _run(rows[0]) if rows else None

    def _list_runs(self) -> list[RunRecord]:
        return [_run(row) for row in self._rows("SELECT * FROM runs")]

    def _insert_job(self, record: JobRecord) -> bool:
        values = _values(record.to_dict())
        columns = ", ".join(values)
        marks = ", ".join("?" * len(values))
        return self._change(
            f"INSERT INTO jobs ({columns}) VALUES ({marks}) "
            "ON CONFLICT (run_id, job, attempt) DO NOTHING", tuple(values.values())) == 1

    def _update_job(self, run_id: str, job: str, attempt: int, changes: Mapping[str, Any],
                    allowed_from: frozenset[str]) -> JobRecord | None:
        values = _values(changes)
        assignments = ", ".join(f"{column} = ?" for column in values) or "status = status"
        statuses = sorted(allowed_from)
        # One statement: the check and the write cannot be split by another writer.
        rows = self._rows(
            f"UPDATE jobs SET {assignments} WHERE run_id = ? AND job = ? AND attempt = ? "
            f"AND status IN ({', '.join('?' * len(statuses))}) RETURNING *",
            (*values.values(), run_id, job, attempt, *statuses))
        return _job(rows[0]) if rows else None

    def _get_job(self, run_id: str, job: str, attempt: int) -> JobRecord | None:
        rows = self._rows("SELECT * FROM jobs WHERE run_id = ? AND job = ? AND attempt = ?",
                          (run_id, job, attempt))
        return _job(rows[0]) if rows else None

    def _jobs(self, run_id: str) -> list[JobRecord]:
        return [_job(row) for row in self._rows("SELECT * FROM jobs WHERE run_id = ?", (run_id,))]

    def _attempts(self, run_id: str, job: str) -> list[JobRecord]:
        return [_job(row) for row in self._rows("SELECT * FROM jobs WHERE run_id = ? AND job = ?",
                                                (run_id, job))]

    def _get_lease(self, run_id: str) -> Lease | None:
        rows = self._rows("SELECT * FROM leases WHERE run_id = ?", (run_id,))
        if not rows:
            return None
        row = rows[0]
        return Lease(run_id=row["run_id"], token=row["token"], host=row["host"], pid=row["pid"],
                     since=row["since"], expires_at=row["expires_at"])

    def _swap_lease(self, run_id: str, lease: Lease, *, expect: str | None) -> bool:
        values = (lease.token, lease.host, lease.pid, lease.since, lease.expires_at)
        if expect is None:
            return self._change(
                "INSERT INTO leases (run_id, token, host, pid, since, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING", (run_id, *values)) == 1
        return self._change(
            "UPDATE leases SET token = ?, host = ?, pid = ?, since = ?, expires_at = ? "
            "WHERE run_id = ? AND token = ?", (*values, run_id, expect)) == 1

    def _drop_lease(self, run_id: str, token: str) -> None:
        self._change("DELETE FROM leases WHERE run_id = ? AND token = ?", (run_id, token))


def _reopen(path: Path, busy_timeout: float, patience: float) -> SqliteJobLog:
    return SqliteJobLog(path, busy_timeout=busy_timeout, patience=patience)


def _code(error: sqlite3.Error) -> int | None:
    """SQLite's primary result code of `error` (SQLITE_BUSY for SQLITE_BUSY_SNAPSHOT …)."""
    code = getattr(error, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def _version(connection: sqlite3.Connection) -> int:
    return int(_pragma(connection, "user_version"))


def _pragma(connection: sqlite3.Connection, pragma: str) -> Any:
    return connection.execute(f"PRAGMA {pragma}").fetchone()[0]


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


_RUN_COLUMNS = ("run_id", "created_at", "plan", "output", "runner_ids", "runner", "settings",
                "cancelled_at")


def _run_row(run: RunRecord) -> tuple[Any, ...]:
    """The run's record as the runs table's columns hold it, in _RUN_COLUMNS' order."""
    return (run.run_id, run.created_at, json.dumps(dict(run.plan), sort_keys=True), run.output,
            json.dumps(dict(run.runner_ids), sort_keys=True), run.runner,
            json.dumps(dict(run.settings), sort_keys=True), run.cancelled_at)


def _run(row: sqlite3.Row) -> RunRecord:
    return RunRecord(run_id=row["run_id"], created_at=row["created_at"],
                     plan=json.loads(row["plan"]), output=row["output"],
                     runner_ids=json.loads(row["runner_ids"]), runner=row["runner"],
                     settings=json.loads(row["settings"]), cancelled_at=row["cancelled_at"])
