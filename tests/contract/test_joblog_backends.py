"""Every job-log backend against the contract, then what is particular to each, then URLs."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from joblog_contract import JobLogContract
from moto_serial import serial_moto

from framefarm.errors import UserError
from framefarm.joblog import JobLog, StatusConflict, open_joblog
from framefarm.joblog.dynamodb import DynamoDBJobLog
from framefarm.joblog.memory import MemoryJobLog
from framefarm.joblog.sqlite import SqliteJobLog
from framefarm.model import RunRecord


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    """The DynamoDB job log's moto server: one that answers one request at a time, so that
    conditional writes are atomic as on DynamoDB (this replaces the session's threaded one)."""
    with serial_moto() as server:
        yield server.url


class TestSqliteJobLog(JobLogContract):
    def make_joblog(self, tmp_path: Path) -> JobLog:
        return SqliteJobLog(tmp_path / "joblog.sqlite3")

    def test_url_has_four_slashes(self, tmp_path: Path) -> None:
        joblog = SqliteJobLog(tmp_path / "j.db")
        assert joblog.url == f"sqlite:///{tmp_path}/j.db"
        assert joblog.url.startswith("sqlite:////")

    def test_wal_mode_and_tables(self, tmp_path: Path) -> None:
        SqliteJobLog(tmp_path / "j.db").close()
        with sqlite3.connect(tmp_path / "j.db") as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        assert {"runs", "jobs"} <= tables

    def test_creates_the_parent_folder(self, tmp_path: Path) -> None:
        SqliteJobLog(tmp_path / "a" / "b" / "j.db")
        assert (tmp_path / "a" / "b" / "j.db").is_file()

    def test_records_outlive_the_connection(self, tmp_path: Path) -> None:
        joblog = SqliteJobLog(tmp_path / "j.db")
        record = joblog.start_job(run_id="r", kind="plan")
        joblog.close()
        assert SqliteJobLog(tmp_path / "j.db").jobs("r") == [record]
        assert joblog.jobs("r") == [record]  # a closed log opens a new connection when used

    def test_folder_that_cannot_be_created(self, tmp_path: Path) -> None:
        (tmp_path / "a-file").write_bytes(b"")
        with pytest.raises(UserError) as caught:
            SqliteJobLog(tmp_path / "a-file" / "j.db")
        message = str(caught.value)
        assert str(tmp_path / "a-file" / "j.db") in message
        assert "FRAMEFARM_JOBLOG" in message and "\n" not in message

    def test_path_that_is_a_folder(self, tmp_path: Path) -> None:
        with pytest.raises(UserError, match="cannot open job log"):
            SqliteJobLog(tmp_path)

    def test_file_that_is_not_a_database(self, tmp_path: Path) -> None:
        (tmp_path / "notes.txt").write_text("hello, this is not SQLite\n" * 100)
        with pytest.raises(UserError, match=r"cannot open job log .*notes\.txt"):
            SqliteJobLog(tmp_path / "notes.txt")

    def test_pickles_without_its_connection(self, tmp_path: Path) -> None:
        joblog = SqliteJobLog(tmp_path / "j.db")
        record = joblog.start_job(run_id="r", kind="plan")
        copy = pickle.loads(pickle.dumps(joblog))
        assert copy.url == joblog.url and copy.jobs("r") == [record]

    def test_pickles_with_its_patience(self, tmp_path: Path) -> None:
        joblog = SqliteJobLog(tmp_path / "j.db", busy_timeout=0.5, patience=7)
        copy = pickle.loads(pickle.dumps(joblog))
        assert (copy.busy_timeout, copy.patience) == (0.5, 7)

    def test_a_damaged_file_is_a_user_error(self, tmp_path: Path) -> None:
        """A job log whose pages are overwritten opens (its header is whole) and then says it
        is damaged, in one line, instead of a traceback."""
        path = tmp_path / "j.db"
        joblog = SqliteJobLog(path)
        for index in range(200):
            joblog.start_job(run_id="r", kind="render", index=index, error="e" * 200)
        joblog.close()
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with open(path, "r+b") as f:
            f.seek(4096)
            f.write(b"\xff" * 4096 * 8)  # the pages after the first
        with pytest.raises(UserError) as caught:
            SqliteJobLog(path).jobs("r")
        message = str(caught.value)
        assert message.startswith(f"job log {path} is damaged (database disk image is malformed)")
        assert "\n" not in message and caught.value.exit_code == 2

    @pytest.mark.parametrize("method", ["fork", "spawn"])
    def test_many_processes_lose_nothing(self, tmp_path: Path, method: str) -> None:
        if method not in multiprocessing.get_all_start_methods():
            pytest.skip(f"no {method} on this platform")
        context: Any = multiprocessing.get_context(method)
        path = tmp_path / "j.db"
        target: SqliteJobLog | str
        if method == "fork":
            # Children inherit this object and its open connection: they must open their own.
            target = SqliteJobLog(path)
            target.start_job(run_id=RUN, kind="plan", status="RUNNABLE")
        else:
            # Children open the URL themselves, all creating the file at once.
            target = "sqlite:///" + str(path)
        barrier = context.Barrier(WORKERS)
        results = context.Queue()
        began = time.monotonic()
        reports = _run_processes(context, _worker, [(target, w, barrier, results)
                                                    for w in range(WORKERS)], results)
        assert time.monotonic() - began < 30

        joblog = SqliteJobLog(path)
        jobs = joblog.jobs(RUN)
        assert len(jobs) == 1 + WORKERS * RENDERS + WORKERS * ENCODES
        renders = [r for r in jobs if r.kind == "render"]
        assert [r.index for r in renders] == list(range(WORKERS * RENDERS))
        for r in renders:
            worker, i = divmod(r.index or 0, RENDERS)
            assert (r.status, r.attempt, r.frames, r.host) == ("SUCCEEDED", 1, i + 1, f"w{worker}")
            assert r.outputs == (f"runs/{RUN}/segments/{r.index:05d}.mp4",)
            assert r.submitted_at <= r.started_at <= r.stopped_at

        # Every process started encode attempts at once: each number was given out exactly once.
        encodes = [r for r in jobs if r.kind == "encode"]
        assert [r.attempt for r in encodes] == list(range(1, WORKERS * ENCODES + 1))
        handed_out = sorted(a for report in reports for a in report["encode_attempts"])
        assert handed_out == list(range(1, WORKERS * ENCODES + 1))
        owner = {a: f"w{report['worker']}" for report in reports for a in report["encode_attempts"]}
        assert all(r.runner_id == owner[r.attempt] for r in encodes)

        # Every process tried to finish the one plan job: exactly one write won.
        winners = [report["worker"] for report in reports if report["won_plan"]]
        assert len(winners) == 1
        plan_record = joblog.get_job(RUN, "plan", 1)
        assert plan_record is not None
        assert plan_record.runner_id == f"w{winners[0]}"
        assert plan_record.status == ("SUCCEEDED" if winners[0] % 2 == 0 else "FAILED")


    def test_processes_changing_one_run_record_lose_no_change(self, tmp_path: Path) -> None:
        """Spawned processes each add their own ids to one run's record, many times, at once:
        every id is there at the end (a read, then a put, would drop others' ids)."""
        _every_change_kept("sqlite:///" + str(tmp_path / "j.db"))


class TestMemoryJobLog(JobLogContract):
    crosses_processes = False

    def make_joblog(self, tmp_path: Path) -> JobLog:
        return MemoryJobLog(f"test-{uuid.uuid4().hex}")

    def test_one_object_per_name(self) -> None:
        name = uuid.uuid4().hex
        assert open_joblog(f"memory://{name}") is open_joblog(f"memory://{name}")
        assert open_joblog(f"memory://{name}") is not open_joblog(f"memory://{name}-2")

    def test_same_name_shares_records(self) -> None:
        name = uuid.uuid4().hex
        MemoryJobLog(name).put_run(RunRecord(run_id="r"))
        assert open_joblog(f"memory://{name}").get_run("r") == RunRecord(run_id="r")
        assert MemoryJobLog(f"{name}-2").runs() == []

    def test_plan_must_be_json_safe(self) -> None:
        with pytest.raises(TypeError):
            MemoryJobLog(uuid.uuid4().hex).put_run(RunRecord(run_id="r", plan={"x": object()}))

    def test_clear(self) -> None:
        joblog = MemoryJobLog(uuid.uuid4().hex)
        joblog.start_job(run_id="r", kind="plan")
        joblog.put_run(RunRecord(run_id="r"))
        joblog.clear()
        assert (joblog.runs(), joblog.jobs("r")) == ([], [])


class TestDynamoDBJobLog(JobLogContract):
    """Real HTTP calls from boto3 to a moto server; a fresh table, made from the CloudFormation
    template's own definition, per test."""

    @pytest.fixture(autouse=True)
    def _table(self, joblog_table: str) -> None:
        self.table = joblog_table

    def make_joblog(self, tmp_path: Path) -> JobLog:
        return DynamoDBJobLog(self.table)

    def raw_items(self) -> list[dict[str, Any]]:
        import boto3

        return boto3.client("dynamodb").scan(TableName=self.table, ConsistentRead=True)["Items"]

    def test_item_design(self, joblog: JobLog) -> None:
        joblog.put_run(RunRecord(run_id="r1", created_at="2026-01-02T03:04:05.000Z"))
        joblog.start_job(run_id="r1", kind="render", index=12, status="SUBMITTED")
        joblog.start_job(run_id="r1", kind="plan")
        keys = sorted((i["pk"]["S"], i["sk"]["S"]) for i in self.raw_items())
        assert keys == [("RUN#r1", "JOB#plan#00001"), ("RUN#r1", "JOB#render:12#00001"),
                        ("RUN#r1", "RUN")]
        run_item = next(i for i in self.raw_items() if i["sk"]["S"] == "RUN")
        assert (run_item["entity"]["S"], run_item["created_at"]["S"]) == ("run", "2026-01-02T03:04:05.000Z")
        job_item = next(i for i in self.raw_items() if i["sk"]["S"].startswith("JOB#render"))
        assert (job_item["status"]["S"], job_item["index"]["N"]) == ("SUBMITTED", "12")
        assert "expires_at" not in job_item  # no TTL unless asked for

    def test_ttl_marks_every_item(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import boto3

        from tests.cfn import resource

        # The attribute the template's table expires items by, and that it is switched on.
        attribute = resource("JobLogTable")["Properties"]["TimeToLiveSpecification"]["AttributeName"]
        ttl = boto3.client("dynamodb").describe_time_to_live(TableName=self.table)
        assert ttl["TimeToLiveDescription"] == {"TimeToLiveStatus": "ENABLED",
                                                "AttributeName": attribute}
        monkeypatch.setenv("FRAMEFARM_JOBLOG_TTL_DAYS", "2")
        joblog = open_joblog(f"dynamodb://{self.table}")
        assert isinstance(joblog, DynamoDBJobLog) and joblog.ttl_days == 2
        before = time.time()
        joblog.put_run(RunRecord(run_id="r"))
        record = joblog.start_job(run_id="r", kind="plan")
        joblog.update_job(record, status="SUCCEEDED")
        assert len(self.raw_items()) == 2
        for item in self.raw_items():
            expires = int(item[attribute]["N"])
            assert before + 2 * 86400 - 5 <= expires <= time.time() + 2 * 86400 + 5

    def test_runs_index_lists_newest_first_page_by_page(self, joblog: JobLog) -> None:
        """The `runs` index alone orders runs (the base class sorts too, so ask the backend), and
        every page of it is read; job items, without `entity`, are not in it."""
        from framefarm import _aws

        assert isinstance(joblog, DynamoDBJobLog)
        stamps = [f"2026-0{m}-01T00:00:00.000Z" for m in (3, 1, 5, 2, 4)]
        for i, stamp in enumerate(stamps):
            joblog.put_run(RunRecord(run_id=f"r{i}", created_at=stamp))
            joblog.start_job(run_id=f"r{i}", kind="plan")
        joblog.put_run(RunRecord(run_id="undated"))  # sorts oldest

        pages: list[object] = []

        def small_pages(params: dict[str, Any], **kwargs: object) -> None:
            if params.get("IndexName") == "runs":
                params.setdefault("Limit", 2)
                pages.append(1)

        _aws.client("dynamodb").meta.events.register("provide-client-params.dynamodb.Query",
                                                     small_pages)
        listed = joblog._list_runs()
        assert [r.created_at for r in listed] == [*sorted(stamps, reverse=True), ""]
        assert listed[-1].run_id == "undated"
        assert len(pages) >= 3

    def test_huge_error_is_cut_so_the_failure_is_recorded(self, joblog: JobLog) -> None:
        """A DynamoDB item holds 400 KB: a 1 MB traceback must not keep the attempt RUNNING."""
        from framefarm.joblog.dynamodb import ERROR_LIMIT

        record = joblog.start_job(run_id="r", kind="render", index=0)
        error = "Traceback (most recent call last):\n" + "  é frame\n" * 100_000 + "ValueError: boom"
        failed = joblog.update_job(record, status="FAILED", error=error)
        assert failed.status == "FAILED"
        assert failed.error.startswith(f"[error cut to its last {ERROR_LIMIT} bytes of ")
        assert failed.error.endswith("  é frame\nValueError: boom")
        assert len(failed.error.encode()) < ERROR_LIMIT + 100
        assert joblog.get_job("r", "render:0", 1) == failed
        small = joblog.start_job(run_id="r", kind="encode")
        assert joblog.update_job(small, status="FAILED", error="short").error == "short"

    def test_a_million_frame_plan_is_a_small_item(self, joblog: JobLog) -> None:
        import json

        from framefarm.model import Plan, VideoSettings

        plan = Plan(run_id="r", sketch="s3://b/framefarm/sketches/" + "0" * 64 + ".py",
                    total_frames=1_000_000, frames_per_job=1, video=VideoSettings(width=1920, height=1080),
                    output="s3://b/framefarm/runs/r/output.mp4", created_at="2026-01-01T00:00:00.000Z",
                    sketch_name="examples/plasma.py")
        stored = plan.to_dict()  # as the plan job stores it (and plan.json holds)
        assert len(json.dumps(stored)) < 1024
        run = RunRecord(run_id="r", created_at=plan.created_at, plan=stored, output=plan.output)
        joblog.put_run(run)
        assert joblog.get_run("r") == run
        assert Plan.from_dict(run.plan).chunk(999_999).frames == range(999_999, 1_000_000)

    def test_ttl_in_the_url_wins(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FRAMEFARM_JOBLOG_TTL_DAYS", "2")
        joblog = open_joblog(f"dynamodb://{self.table}?ttl_days=0.5")
        assert isinstance(joblog, DynamoDBJobLog) and joblog.ttl_days == 0.5
        assert open_joblog(joblog.url).url == joblog.url

    def test_missing_table_is_one_line(self) -> None:
        joblog = open_joblog("dynamodb://no-such-table-for-framefarm")
        for action in (lambda: joblog.get_run("r"), lambda: joblog.jobs("r"), joblog.runs,
                       lambda: joblog.start_job(run_id="r", kind="plan")):
            with pytest.raises(UserError) as caught:
                action()
            message = str(caught.value)
            assert "DynamoDB table 'no-such-table-for-framefarm' does not exist" in message
            assert "FRAMEFARM_JOBLOG" in message and "\n" not in message
            assert caught.value.exit_code == 2

    def test_pickles_without_its_client(self, joblog: JobLog) -> None:
        record = joblog.start_job(run_id="r", kind="plan")
        copy = pickle.loads(pickle.dumps(joblog))
        assert copy.url == joblog.url and copy.jobs("r") == [record]

    def test_processes_racing_lose_nothing(self) -> None:
        """Spawned processes (each its own client) race for attempt numbers and for finishing
        one job: every number is handed out once, and exactly one finish wins. (On the module's
        serial moto server: moto's threaded one checks a condition and writes without a lock, so
        two racers could both pass it, as they cannot on DynamoDB.)"""
        joblog = DynamoDBJobLog(self.table)
        plan = joblog.start_job(run_id=RUN, kind="plan", status="RUNNING")
        context: Any = multiprocessing.get_context("spawn")
        barrier = context.Barrier(RACERS)
        results = context.Queue()
        reports = _run_processes(context, _racer, [(joblog.url, w, barrier, results)
                                                   for w in range(RACERS)], results)
        handed_out = sorted(a for report in reports for a in report["attempts"])
        assert handed_out == list(range(1, RACERS * RACES + 1))
        assert [r.attempt for r in joblog.jobs(RUN) if r.kind == "encode"] == handed_out
        winners = [report["worker"] for report in reports if report["won"]]
        assert len(winners) == 1
        final = joblog.get_job(RUN, "plan", plan.attempt)
        assert final is not None and final.runner_id == f"w{winners[0]}"
        assert final.status == ("SUCCEEDED" if winners[0] % 2 == 0 else "FAILED")

    def test_processes_changing_one_run_record_lose_no_change(self) -> None:
        """As the SQLite one: each change is a compare-and-swap on the item's record (on the
        module's serial moto server, which checks a condition and writes as one step)."""
        _every_change_kept(DynamoDBJobLog(self.table).url)


RACERS = 4
RACES = 6
CHANGES = 8


def _every_change_kept(url: str) -> None:
    open_joblog(url).put_run(RunRecord(run_id=RUN, plan={"size": 1}))
    context: Any = multiprocessing.get_context("spawn")
    barrier = context.Barrier(RACERS)
    results = context.Queue()
    _run_processes(context, _changer, [(url, w, barrier, results) for w in range(RACERS)],
                   results)
    final = open_joblog(url).get_run(RUN)
    assert final is not None and final.plan == {"size": 1}
    assert sorted(final.runner_ids) == sorted(f"w{w}-{k}" for w in range(RACERS)
                                              for k in range(CHANGES))


def _changer(url: str, worker: int, barrier: Any, results: Any) -> None:
    from dataclasses import replace

    joblog = open_joblog(url)
    barrier.wait()
    for k in range(CHANGES):
        joblog.update_run(RUN, lambda run, k=k: replace(
            run, runner_ids={**run.runner_ids, f"w{worker}-{k}": "x"}) if run else None)
    results.put({"worker": worker})


def _run_processes(context: Any, target: Any, args: list[tuple[Any, ...]],
                   results: Any) -> list[dict[str, Any]]:
    """Start one process per `args`, collect each one's report, and check they all exit 0."""
    processes = [context.Process(target=target, args=a) for a in args]
    for process in processes:
        process.start()
    reports = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert [p.exitcode for p in processes] == [0] * len(processes)
    return reports


def _finish(joblog: JobLog, plan: Any, worker: int) -> bool:
    """Try to end the plan job (even workers with success, odd with failure); True if it won."""
    try:
        joblog.update_job(plan, status="SUCCEEDED" if worker % 2 == 0 else "FAILED",
                          runner_id=f"w{worker}")
    except StatusConflict:
        return False
    return True


def _racer(url: str, worker: int, barrier: Any, results: Any) -> None:
    joblog = open_joblog(url)
    barrier.wait()
    attempts = [joblog.start_job(run_id=RUN, kind="encode", runner_id=f"w{worker}").attempt
                for _ in range(RACES)]
    plan = joblog.get_job(RUN, "plan", 1)
    assert plan is not None
    results.put({"worker": worker, "attempts": attempts, "won": _finish(joblog, plan, worker)})


def test_dynamodb_url() -> None:
    joblog = open_joblog("dynamodb://framefarm-joblog")  # opening makes no call: no AWS needed
    assert isinstance(joblog, DynamoDBJobLog)
    assert (joblog.table, joblog.url) == ("framefarm-joblog", "dynamodb://framefarm-joblog")


@pytest.mark.parametrize(("url", "message"), [
    ("dynamodb://", "names no table"), ("dynamodb://a/b", "names no table"),
    ("dynamodb://t?ttl_days=soon", "is not a number of days"),
    ("dynamodb://t?ttl_days=-1", "use 0 (keep items) or more"),
])
def test_bad_dynamodb_url(url: str, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        open_joblog(url)


# -- many processes, one SQLite file ------------------------------------------------------------

RUN = "run-many"
WORKERS = 6
RENDERS = 40  # render jobs per worker, each written four times
ENCODES = 15  # encode attempts per worker, all racing for the next number


def _worker(target: SqliteJobLog | str, worker: int, barrier: Any, results: Any) -> None:
    joblog = open_joblog(target) if isinstance(target, str) else target
    if isinstance(target, str) and worker == 0:
        joblog.start_job(run_id=RUN, kind="plan", attempt=1, status="RUNNABLE")
    barrier.wait()
    for i in range(RENDERS):
        index = worker * RENDERS + i
        record = joblog.start_job(run_id=RUN, kind="render", index=index, status="SUBMITTED")
        record = joblog.update_job(record, status="RUNNING", host=f"w{worker}")
        record = joblog.update_job(record, frames=i + 1)
        joblog.update_job(record, status="SUCCEEDED",
                          outputs=[f"runs/{RUN}/segments/{index:05d}.mp4"])
    attempts = [joblog.start_job(run_id=RUN, kind="encode", runner_id=f"w{worker}").attempt
                for _ in range(ENCODES)]
    plan = None
    while plan is None:  # the plan record is written by worker 0 in the spawn case
        plan = joblog.get_job(RUN, "plan", 1)
    results.put({"worker": worker, "pid": os.getpid(), "encode_attempts": attempts,
                 "won_plan": _finish(joblog, plan, worker)})


# -- open_joblog ---------------------------------------------------------------------------------


def test_sqlite_url_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    joblog = open_joblog("sqlite:///data/j.db")
    assert isinstance(joblog, SqliteJobLog)
    assert joblog.path == tmp_path / "data" / "j.db"
    assert joblog.url == f"sqlite:///{tmp_path}/data/j.db"


def test_sqlite_url_absolute(tmp_path: Path) -> None:
    joblog = open_joblog(f"sqlite:///{tmp_path}/j.db")
    assert isinstance(joblog, SqliteJobLog)
    assert joblog.path == tmp_path / "j.db"
    assert open_joblog(joblog.url).url == joblog.url


def test_bare_path_is_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    joblog = open_joblog("j.db")
    assert isinstance(joblog, SqliteJobLog) and joblog.path == tmp_path / "j.db"


@pytest.mark.parametrize("url", ["sqlite://j.db", "sqlite:///", "sqlite:///:memory:",
                                 "sqlite:j.db"])
def test_bad_sqlite_url(url: str) -> None:
    with pytest.raises(UserError, match=f"bad job log URL {url!r}"):
        open_joblog(url)


def test_memory_url() -> None:
    joblog = open_joblog("memory://named")
    assert isinstance(joblog, MemoryJobLog) and joblog.url == "memory://named"


@pytest.mark.parametrize("url", ["postgres://db", "s3://bucket/x", "file:///tmp/j.db"])
def test_unknown_scheme(url: str) -> None:
    with pytest.raises(UserError) as caught:
        open_joblog(url)
    assert str(caught.value) == (f"unknown job log URL {url!r}: "
                                 "use one of sqlite:///path, memory://name, dynamodb://table")


def test_no_url() -> None:
    with pytest.raises(UserError, match="no job log URL"):
        open_joblog("")


def test_sqlite_schema_1_is_migrated(tmp_path: Path) -> None:
    """A job log written before runner ids were recorded opens, keeps its runs and gains them."""
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript("CREATE TABLE runs (run_id TEXT PRIMARY KEY, created_at TEXT NOT NULL "
                      "DEFAULT '', plan TEXT NOT NULL DEFAULT '{}', output TEXT NOT NULL "
                      "DEFAULT ''); INSERT INTO runs VALUES ('r', 't', '{}', 'o.mp4'); "
                      "CREATE TABLE jobs (run_id TEXT NOT NULL, job TEXT NOT NULL, attempt "
                      "INTEGER NOT NULL, kind TEXT NOT NULL, idx INTEGER, status TEXT NOT NULL, "
                      "submitted_at TEXT NOT NULL DEFAULT '', started_at TEXT NOT NULL DEFAULT '', "
                      "stopped_at TEXT NOT NULL DEFAULT '', host TEXT NOT NULL DEFAULT '', "
                      "frames INTEGER NOT NULL DEFAULT 0, outputs TEXT NOT NULL DEFAULT '[]', "
                      "error TEXT NOT NULL DEFAULT '', trace_id TEXT NOT NULL DEFAULT '', "
                      "runner_id TEXT NOT NULL DEFAULT '', PRIMARY KEY (run_id, job, attempt)) "
                      "WITHOUT ROWID; INSERT INTO jobs (run_id, job, attempt, kind, idx, status, "
                      "frames) VALUES ('r', 'render:0', 1, 'render', 0, 'SUCCEEDED', 5); "
                      "PRAGMA user_version = 1;")
    old.close()
    log = SqliteJobLog(path)
    assert log.get_run("r") == RunRecord(run_id="r", created_at="t", output="o.mp4")
    # Its job records gain the columns added since (a segment's hash and size), empty.
    (job,) = log.jobs("r")
    assert (job.status, job.frames, job.sha256, job.bytes, job.heartbeat_at, job.exit_code) == (
        "SUCCEEDED", 5, "", 0, "", 0)
    log.put_run(RunRecord(run_id="r", runner_ids={"render": "x"}))
    assert log.get_run("r") == RunRecord(run_id="r", runner_ids={"render": "x"})
