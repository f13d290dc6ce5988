"""The job log when things go wrong for real: processes that create or migrate one file at once,
another process holding it locked, a full disk, a read-only file system, a DynamoDB that
throttles or cannot be reached. What a user sees is checked: every write lands, or one line
that names the job log and the cause, with the exit code that says whether a retry may help."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from framefarm import _aws
from framefarm.errors import TransientError, UserError
from framefarm.joblog import open_joblog
from framefarm.joblog.dynamodb import DynamoDBJobLog
from framefarm.joblog.sqlite import SqliteJobLog
from framefarm.model import RunRecord
from tests.contract.moto_serial import SerialMoto, serial_moto

pytestmark = pytest.mark.integration

RUN = "run-faults"


def one_line(error: BaseException) -> str:
    message = str(error)
    assert message and "\n" not in message and "Traceback" not in message
    return message


# -- many processes open a new (or old) file at once ----------------------------------------------

OPENERS = 12
ROUNDS = 10


def _open_and_write(path: str, worker: int, barrier: Any, results: Any) -> None:
    barrier.wait()
    try:
        joblog = SqliteJobLog(path)
        record = joblog.start_job(run_id=RUN, kind="render", index=worker, runner_id=f"w{worker}")
        joblog.update_job(record, status="SUCCEEDED", sha256="0" * 64)
        results.put((worker, "ok"))
    except BaseException as e:
        results.put((worker, f"{type(e).__name__}: {e}"))


def _race_to_open(path: Path) -> list[str]:
    """OPENERS processes open `path` at the same moment and each writes one job; their errors."""
    context: Any = multiprocessing.get_context("fork")  # fork: they reach the file together
    barrier = context.Barrier(OPENERS)
    results = context.Queue()
    processes = [context.Process(target=_open_and_write, args=(str(path), w, barrier, results))
                 for w in range(OPENERS)]
    for process in processes:
        process.start()
    got = dict(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    assert [p.exitcode for p in processes] == [0] * OPENERS
    return [f"worker {w}: {outcome}" for w, outcome in sorted(got.items()) if outcome != "ok"]


def _check_every_job_landed(path: Path) -> None:
    jobs = SqliteJobLog(path).jobs(RUN)
    assert [(r.index, r.status, r.runner_id) for r in jobs] == [
        (w, "SUCCEEDED", f"w{w}") for w in range(OPENERS)]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_processes_creating_one_new_file_at_once_all_open_and_write(tmp_path: Path) -> None:
    for round_ in range(ROUNDS):
        path = tmp_path / f"round-{round_}" / "joblog.sqlite3"
        assert _race_to_open(path) == []
        _check_every_job_landed(path)


def test_processes_migrating_one_old_file_at_once_all_open_and_write(tmp_path: Path) -> None:
    """A job log of schema version 1 (before runner ids) gains its columns exactly once."""
    for round_ in range(ROUNDS // 2):
        path = tmp_path / f"round-{round_}.sqlite3"
        old = sqlite3.connect(path)
        old.executescript(
            "CREATE TABLE runs (run_id TEXT PRIMARY KEY, created_at TEXT NOT NULL DEFAULT '', "
            "plan TEXT NOT NULL DEFAULT '{}', output TEXT NOT NULL DEFAULT ''); "
            "INSERT INTO runs VALUES ('old', 't', '{}', 'o.mp4'); "
            "CREATE TABLE jobs (run_id TEXT NOT NULL, job TEXT NOT NULL, attempt INTEGER NOT NULL, "
            "kind TEXT NOT NULL, idx INTEGER, status TEXT NOT NULL, submitted_at TEXT NOT NULL "
            "DEFAULT '', started_at TEXT NOT NULL DEFAULT '', stopped_at TEXT NOT NULL DEFAULT '', "
            "host TEXT NOT NULL DEFAULT '', frames INTEGER NOT NULL DEFAULT 0, outputs TEXT NOT NULL "
            "DEFAULT '[]', error TEXT NOT NULL DEFAULT '', trace_id TEXT NOT NULL DEFAULT '', "
            "runner_id TEXT NOT NULL DEFAULT '', PRIMARY KEY (run_id, job, attempt)) WITHOUT ROWID; "
            "PRAGMA user_version = 1;")
        old.close()
        assert _race_to_open(path) == []
        _check_every_job_landed(path)
        assert SqliteJobLog(path).get_run("old") == RunRecord(run_id="old", created_at="t",
                                                              output="o.mp4")


# -- another process holds the file ---------------------------------------------------------------

HOLD_SECONDS = 3.0

_HOLDER = textwrap.dedent("""
    import sqlite3, sys, time
    path, how, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    db = sqlite3.connect(path, isolation_level=None)
    if how == "exclusive":  # readers are locked out too, not only writers
        db.execute("PRAGMA locking_mode = EXCLUSIVE")
    db.execute("BEGIN EXCLUSIVE")
    db.execute("UPDATE runs SET output = 'held' WHERE run_id = 'r'")
    print("locked", flush=True)
    time.sleep(seconds)
    db.execute("COMMIT")
    db.close()
    print("released", flush=True)
""")


@pytest.fixture
def hold_lock(tmp_path: Path) -> Iterator[Callable[[Path, str, float], subprocess.Popen[str]]]:
    """Start a process that locks a job log file (`write` or `exclusive`) for some seconds."""
    started: list[subprocess.Popen[str]] = []

    def hold(path: Path, how: str, seconds: float) -> subprocess.Popen[str]:
        holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path), how, str(seconds)],
                                  stdout=subprocess.PIPE, text=True)
        started.append(holder)
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        return holder

    yield hold
    for holder in started:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_a_write_waits_for_a_process_that_holds_the_file(
        tmp_path: Path, hold_lock: Callable[[Path, str, float], subprocess.Popen[str]]) -> None:
    path = tmp_path / "joblog.sqlite3"
    # SQLite's own busy handler gives up after 0.2 s; the job log keeps trying.
    joblog = SqliteJobLog(path, busy_timeout=0.2)
    joblog.put_run(RunRecord(run_id="r"))
    holder = hold_lock(path, "write", HOLD_SECONDS)
    began = time.monotonic()
    record = joblog.start_job(run_id=RUN, kind="plan")
    waited = time.monotonic() - began
    assert holder.wait(timeout=30) == 0
    assert HOLD_SECONDS - 0.5 <= waited < HOLD_SECONDS + 5
    assert SqliteJobLog(path).jobs(RUN) == [record]
    stored = joblog.get_run("r")
    assert stored is not None and stored.output == "held"  # the holder's write landed first


@pytest.mark.slow
def test_opening_and_reading_wait_for_a_process_that_locks_readers_out(
        tmp_path: Path, hold_lock: Callable[[Path, str, float], subprocess.Popen[str]]) -> None:
    path = tmp_path / "joblog.sqlite3"
    first = SqliteJobLog(path)
    first.put_run(RunRecord(run_id="r", output="before"))
    first.close()
    holder = hold_lock(path, "exclusive", HOLD_SECONDS)  # it must be alone with the file
    began = time.monotonic()
    stored = SqliteJobLog(path, busy_timeout=0.2).get_run("r")
    assert time.monotonic() - began >= HOLD_SECONDS - 0.5
    assert stored is not None and stored.output == "held"
    assert holder.wait(timeout=30) == 0


def test_a_file_held_longer_than_the_patience_is_one_line(
        tmp_path: Path, hold_lock: Callable[[Path, str, float], subprocess.Popen[str]]) -> None:
    path = tmp_path / "joblog.sqlite3"
    joblog = SqliteJobLog(path, busy_timeout=0.1, patience=1.0)
    joblog.put_run(RunRecord(run_id="r"))
    hold_lock(path, "write", 30)
    began = time.monotonic()
    with pytest.raises(TransientError) as caught:
        joblog.start_job(run_id=RUN, kind="plan")
    assert 1.0 <= time.monotonic() - began < 5
    message = one_line(caught.value)
    assert message.startswith(f"job log {path} is busy: another process kept it locked for more "
                              "than 1 s")
    assert caught.value.exit_code == 1


# -- a full disk, a read-only file system ---------------------------------------------------------

def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here (needs root): {done.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KB file system (tmpfs), as a disk that fills up."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    _mount("-t", "tmpfs", "-o", "size=512k", "tmpfs", str(folder))
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


def _fill(folder: Path) -> Path:
    """Fill the file system of `folder` to the last byte; the filler file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 512)
    except OSError as e:
        assert e.errno == 28  # ENOSPC
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_is_one_transient_line_and_damages_nothing(small_disk: Path) -> None:
    path = small_disk / "joblog.sqlite3"
    joblog = SqliteJobLog(path)
    first = joblog.start_job(run_id=RUN, kind="plan")
    filler = _fill(small_disk)
    with pytest.raises(TransientError) as caught:
        for index in range(1000):  # a page or two may still fit in what SQLite holds
            joblog.start_job(run_id=RUN, kind="render", index=index, error="x" * 2000)
    message = one_line(caught.value)
    assert message == (f"job log {path}: database or disk is full; free space on its disk and "
                       "try again")
    assert caught.value.exit_code == 1
    assert joblog.get_job(RUN, "plan", 1) == first  # reads still work

    filler.unlink()  # space again: the same job log goes on, nothing lost
    done = joblog.update_job(first, status="SUCCEEDED")
    assert SqliteJobLog(path).get_job(RUN, "plan", 1) == done


def test_a_new_job_log_on_a_full_disk_is_transient(small_disk: Path) -> None:
    _fill(small_disk)
    with pytest.raises(TransientError) as caught:
        SqliteJobLog(small_disk / "new.sqlite3")
    message = one_line(caught.value)
    assert str(small_disk / "new.sqlite3") in message and "full" in message


def test_a_job_log_at_its_page_limit_is_transient(tmp_path: Path) -> None:
    """SQLite's own SQLITE_FULL, without a small disk: the file may not grow past its pages."""
    path = tmp_path / "joblog.sqlite3"
    joblog = SqliteJobLog(path)
    joblog.start_job(run_id=RUN, kind="plan")
    db = joblog._db()  # this thread's connection, the one the writes below use
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(TransientError) as caught:
        for index in range(100):
            joblog.start_job(run_id=RUN, kind="render", index=index, error="x" * 5000)
    assert one_line(caught.value) == (f"job log {path}: database or disk is full; free space on "
                                      "its disk and try again")


@pytest.fixture
def read_only_view(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A folder and a read-only view of it (a read-only bind mount): (writable, read-only)."""
    writable, read_only = tmp_path / "rw", tmp_path / "ro"
    writable.mkdir()
    read_only.mkdir()
    _mount("--bind", str(writable), str(read_only))
    try:
        _mount("-o", "remount,ro,bind", str(read_only))
        yield writable, read_only
    finally:
        subprocess.run(["umount", "-l", str(read_only)], check=True)


def test_a_read_only_file_system(read_only_view: tuple[Path, Path]) -> None:
    writable, read_only = read_only_view
    live = SqliteJobLog(writable / "joblog.sqlite3")  # a writer keeps the file in use
    record = live.start_job(run_id=RUN, kind="plan")
    seen = SqliteJobLog(read_only / "joblog.sqlite3")
    assert seen.jobs(RUN) == [record]  # reading works
    with pytest.raises(TransientError) as caught:
        seen.update_job(record, status="SUCCEEDED")
    message = one_line(caught.value)
    assert message == (f"job log {read_only / 'joblog.sqlite3'}: attempt to write a readonly "
                       "database; make the file, its folder and its file system writable and "
                       "try again")
    assert live.get_job(RUN, "plan", 1) == record
    # A job log that cannot even be created there is a bad path: the user must choose another.
    with pytest.raises(UserError) as bad:
        SqliteJobLog(read_only / "new.sqlite3")
    assert one_line(bad.value).startswith(f"cannot open job log {read_only / 'new.sqlite3'} (")
    assert bad.value.exit_code == 2


def test_a_file_that_is_not_a_job_log_stays_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite3"
    path.write_bytes(b"not SQLite at all\n" * 200)
    with pytest.raises(UserError) as caught:
        open_joblog(f"sqlite:///{path}")
    assert one_line(caught.value).startswith(f"cannot open job log {path} (file is not a database)")
    assert caught.value.exit_code == 2


# -- DynamoDB that throttles, fails or cannot be reached ------------------------------------------

@pytest.fixture(scope="module")
def server() -> Iterator[SerialMoto]:
    with serial_moto() as running:
        yield running


@pytest.fixture(scope="module")
def moto_server(server: SerialMoto) -> str:
    """The AWS fixtures' moto server: the one whose answers these tests can turn into errors."""
    return server.url


@pytest.fixture
def few_attempts(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """botocore's attempts per call, fewer than framefarm's (so its backoff is short)."""
    monkeypatch.setattr(_aws, "MAX_ATTEMPTS", 2)
    _aws.reset()
    yield 2
    _aws.reset()


@pytest.mark.parametrize(("code", "status"), [
    ("ProvisionedThroughputExceededException", 400), ("ThrottlingException", 400),
    ("RequestLimitExceeded", 400), ("InternalServerError", 500), ("ServiceUnavailable", 503)])
def test_dynamodb_that_keeps_failing_is_one_transient_line(
        server: SerialMoto, joblog_table: str, few_attempts: int, code: str, status: int) -> None:
    joblog = DynamoDBJobLog(joblog_table)
    server.fault(code, status=status)
    try:
        with pytest.raises(TransientError) as caught:
            joblog.start_job(run_id=RUN, kind="plan")
        assert server.faulted() == few_attempts  # botocore retried it first, as configured
    finally:
        server.clear()
    message = one_line(caught.value)
    assert f"the job log dynamodb://{joblog_table} ({code}) after {few_attempts} attempts" in message
    assert caught.value.exit_code == 1
    _aws.reset()  # a new client: this one's adaptive rate limit would slow the checks below
    assert joblog.jobs(RUN) == []
    assert joblog.start_job(run_id=RUN, kind="plan").attempt == 1  # a retry later passes


def test_dynamodb_throttling_within_botocores_retries_is_not_seen(
        server: SerialMoto, joblog_table: str) -> None:
    joblog = DynamoDBJobLog(joblog_table)
    server.fault("ProvisionedThroughputExceededException", times=2)
    try:
        record = joblog.start_job(run_id=RUN, kind="plan")
        assert server.faulted() == 2
    finally:
        server.clear()
    assert joblog.jobs(RUN) == [record]


def test_dynamodb_out_of_reach_is_one_transient_line(
        joblog_table: str, few_attempts: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    _aws.reset()
    with pytest.raises(TransientError) as caught:
        DynamoDBJobLog(joblog_table).get_run("r")
    message = one_line(caught.value)
    assert message.startswith(f"cannot reach DynamoDB for the job log dynamodb://{joblog_table} (")
    assert f"127.0.0.1:{port}" in message and caught.value.exit_code == 1
