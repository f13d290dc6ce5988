"""The behaviour every JobLog backend shares, written once (fsspec's tests/abstract style).

A backend's test class subclasses `JobLogContract` and implements `make_joblog`; every test here
then runs against that backend.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framefarm.errors import LeaseHeld, UserError
from framefarm.joblog import JobLog, StatusConflict, open_joblog
from framefarm.joblog._base import LEASE_SECONDS
from framefarm.model import STATUSES, TERMINAL_STATUSES, JobRecord, Lease, RunRecord, can_move

RUN = "run-1"
LEASE_RACERS = 4
LEASE_RACES = 10  # runs every racer tries to take, half of them from a stale holder


class JobLogContract:
    """Subclass and implement `make_joblog`; a fresh, empty job log per test."""

    crosses_processes = True
    """Whether other processes see the job log (they do not see one in memory)."""

    def make_joblog(self, tmp_path: Path) -> JobLog:
        raise NotImplementedError

    @pytest.fixture
    def joblog(self, tmp_path: Path) -> Iterator[JobLog]:
        joblog = self.make_joblog(tmp_path)
        yield joblog
        joblog.close()

    # -- runs ---------------------------------------------------------------------------------

    def test_run_round_trip(self, joblog: JobLog) -> None:
        plan = {"run_id": RUN, "video": {"width": 64, "fps": "30000/1001"}, "chunks": [[0, 8]]}
        run = RunRecord(run_id=RUN, created_at="2024-05-01T10:00:00.000Z", plan=plan,
                        output="out.mp4", runner_ids={"render": "abc-123", "encode": "def-456"})
        joblog.put_run(run)
        assert joblog.get_run(RUN) == run

    def test_run_lifecycle_fields_round_trip(self, joblog: JobLog) -> None:
        run = RunRecord(run_id=RUN, created_at="2026-05-01T10:00:00.000Z", runner="batch",
                        settings={"job_queue": "q-1", "region": "eu-west-1"},
                        cancelled_at="2026-05-01T10:05:00.000Z")
        joblog.put_run(run)
        assert joblog.get_run(RUN) == run
        assert joblog.runs() == [run]

    def test_mark_cancelled_keeps_the_first_time(self, joblog: JobLog) -> None:
        assert joblog.mark_cancelled("nope") is None
        assert joblog.get_run("nope") is None
        joblog.put_run(RunRecord(run_id=RUN, runner="local", settings={"workers": "2"}))
        first = joblog.mark_cancelled(RUN)
        assert first is not None and first.cancelled_at
        time.sleep(0.01)  # a second cancel a moment later
        assert joblog.mark_cancelled(RUN) == first
        assert joblog.get_run(RUN) == first
        assert (first.runner, first.settings) == ("local", {"workers": "2"})

    def test_update_run_creates_changes_and_leaves_a_record(self, joblog: JobLog) -> None:
        made = joblog.update_run(RUN, lambda run: RunRecord(run_id=RUN, runner="batch")
                                 if run is None else None)
        assert made == RunRecord(run_id=RUN, runner="batch") == joblog.get_run(RUN)
        assert joblog.update_run(RUN, lambda run: None) == made  # None: left as it is
        changed = joblog.update_run(RUN, lambda run: replace(run, runner_ids={"plan": "p-1"})
                                    if run else None)
        assert changed == joblog.get_run(RUN)
        assert changed is not None and (changed.runner, changed.runner_ids) == ("batch",
                                                                                {"plan": "p-1"})

    def test_update_run_keeps_a_write_made_between_its_read_and_its_write(
            self, joblog: JobLog) -> None:
        """As when the command records its plan job's id while the plan job records its render
        jobs': the other write lands between this one's read and its write, and both stay."""
        joblog.put_run(RunRecord(run_id=RUN, plan={"size": 4}))
        other = open_joblog(joblog.url) if self.crosses_processes else joblog
        seen: list[RunRecord | None] = []

        def change(run: RunRecord | None) -> RunRecord:
            assert run is not None
            seen.append(run)
            if len(seen) == 1:  # the other writer gets in first
                other.put_run(replace(run, runner_ids={**run.runner_ids, "render": "r-1"}))
            return replace(run, runner_ids={**run.runner_ids, "plan": "p-1"})

        joblog.update_run(RUN, change)
        final = joblog.get_run(RUN)
        assert final is not None
        assert (final.plan, final.runner_ids) == ({"size": 4}, {"render": "r-1", "plan": "p-1"})
        assert len(seen) == 2

    def test_update_run_keeps_a_record_created_after_it_found_none(self, joblog: JobLog) -> None:
        other = open_joblog(joblog.url) if self.crosses_processes else joblog
        calls: list[RunRecord | None] = []

        def change(run: RunRecord | None) -> RunRecord:
            calls.append(run)
            if len(calls) == 1:
                assert run is None
                other.put_run(RunRecord(run_id=RUN, plan={"size": 2}, output="v.mp4"))
            return replace(run or RunRecord(run_id=RUN), runner="batch")

        joblog.update_run(RUN, change)
        assert joblog.get_run(RUN) == RunRecord(run_id=RUN, plan={"size": 2}, output="v.mp4",
                                                runner="batch")

    def test_missing_run(self, joblog: JobLog) -> None:
        assert joblog.get_run("nope") is None
        assert joblog.runs() == []

    def test_put_run_replaces(self, joblog: JobLog) -> None:
        joblog.put_run(RunRecord(run_id=RUN, created_at="2024-01-01T00:00:00.000Z"))
        joblog.put_run(RunRecord(run_id=RUN, created_at="2024-01-01T00:00:00.000Z",
                                 plan={"size": 3}, output="v.mp4"))
        assert joblog.get_run(RUN) == RunRecord(run_id=RUN, created_at="2024-01-01T00:00:00.000Z",
                                                plan={"size": 3}, output="v.mp4")
        assert len(joblog.runs()) == 1

    def test_stored_plan_is_a_copy(self, joblog: JobLog) -> None:
        plan = {"chunks": [[0, 1]]}
        joblog.put_run(RunRecord(run_id=RUN, plan=plan))
        plan["chunks"].append([1, 2])
        got = joblog.get_run(RUN)
        assert got is not None
        got.plan["chunks"].append([9, 9])
        assert joblog.get_run(RUN) == RunRecord(run_id=RUN, plan={"chunks": [[0, 1]]})

    def test_runs_newest_first(self, joblog: JobLog) -> None:
        for run_id, day in [("b", 2), ("a", 3), ("c", 1), ("d", 2)]:
            joblog.put_run(RunRecord(run_id=run_id, created_at=f"2024-01-0{day}T00:00:00.000Z"))
        assert [r.run_id for r in joblog.runs()] == ["a", "d", "b", "c"]

    # -- starting jobs ------------------------------------------------------------------------

    def test_start_job(self, joblog: JobLog) -> None:
        record = joblog.start_job(run_id=RUN, kind="render", index=3, host="box")
        assert (record.job, record.kind, record.index) == ("render:3", "render", 3)
        assert record.attempt == 1
        assert record.status == "RUNNING"
        assert record.submitted_at and record.started_at == record.submitted_at
        assert not record.stopped_at
        assert joblog.get_job(RUN, "render:3", 1) == record

    def test_start_submitted_job_has_not_started(self, joblog: JobLog) -> None:
        record = joblog.start_job(run_id=RUN, kind="encode", status="SUBMITTED")
        assert (record.status, record.started_at) == ("SUBMITTED", "")

    def test_start_job_unknown_status(self, joblog: JobLog) -> None:
        with pytest.raises(UserError, match="unknown job status 'DONE'"):
            joblog.start_job(run_id=RUN, kind="plan", status="DONE")
        assert joblog.jobs(RUN) == []

    def test_attempts_are_numbered(self, joblog: JobLog) -> None:
        attempts = [joblog.start_job(run_id=RUN, kind="render", index=0).attempt
                    for _ in range(3)]
        assert attempts == [1, 2, 3]
        assert joblog.start_job(run_id=RUN, kind="render", index=1).attempt == 1
        assert joblog.start_job(run_id="other", kind="render", index=0).attempt == 1

    def test_attempts_are_numbered_per_job_not_by_name_prefix(self, joblog: JobLog) -> None:
        for index in (10, 100, 10, 1):
            joblog.start_job(run_id=RUN, kind="render", index=index)
        assert joblog.start_job(run_id=RUN, kind="render", index=1).attempt == 2
        assert joblog.start_job(run_id=RUN, kind="render", index=10).attempt == 3
        joblog.start_job(run_id=RUN, kind="render", index=5, status="SUBMITTED")
        assert joblog.start_job(run_id=RUN, kind="render", index=5).attempt == 1

    def test_explicit_attempt(self, joblog: JobLog) -> None:
        record = joblog.start_job(run_id=RUN, kind="plan", attempt=4)
        assert record.attempt == 4
        assert joblog.get_job(RUN, "plan", 4) == record
        assert joblog.start_job(run_id=RUN, kind="plan").attempt == 5

    def test_explicit_attempt_takes_over_submitted(self, joblog: JobLog) -> None:
        # A runner records the job as SUBMITTED; the job itself then starts that same attempt.
        submitted = joblog.start_job(run_id=RUN, kind="render", index=2, attempt=1,
                                     status="SUBMITTED", runner_id="batch-123")
        started = joblog.start_job(run_id=RUN, kind="render", index=2, attempt=1, host="box")
        assert started.status == "RUNNING"
        assert started.submitted_at == submitted.submitted_at
        assert started.started_at
        assert (started.host, started.runner_id) == ("box", "batch-123")
        assert joblog.jobs(RUN) == [started]

    def test_unnumbered_start_takes_over_a_job_not_yet_started(self, joblog: JobLog) -> None:
        # Run outside Batch (no AWS_BATCH_JOB_ATTEMPT), a job still takes over its SUBMITTED
        # record instead of leaving it waiting for ever beside a second attempt.
        joblog.start_job(run_id=RUN, kind="encode", status="SUBMITTED", runner_id="b-9")
        started = joblog.start_job(run_id=RUN, kind="encode")
        assert (started.attempt, started.status, started.runner_id) == (1, "RUNNING", "b-9")
        joblog.update_job(started, status="FAILED")
        again = joblog.start_job(run_id=RUN, kind="encode")
        assert (again.attempt, again.status) == (2, "RUNNING")

    def test_explicit_attempt_that_is_final(self, joblog: JobLog) -> None:
        done = joblog.start_job(run_id=RUN, kind="encode", attempt=1)
        done = joblog.update_job(done, status="SUCCEEDED")
        for status in ("RUNNING", "SUCCEEDED"):
            with pytest.raises(StatusConflict):
                joblog.start_job(run_id=RUN, kind="encode", attempt=1, status=status)
        assert joblog.get_job(RUN, "encode", 1) == done

    def test_fields_round_trip(self, joblog: JobLog) -> None:
        record = joblog.start_job(run_id=RUN, kind="render", index=7, host="h", frames=3,
                                  outputs=("runs/run-1/segments/00007.mp4",), trace_id="t" * 32,
                                  runner_id="arn:x", error="")
        assert joblog.get_job(RUN, "render:7", 1) == record
        updated = joblog.update_job(record, frames=8, outputs=["a", "b"], error="boom: ü",
                                    trace_id="1-abc", runner_id="wf-9", host="h2")
        assert (updated.frames, updated.outputs, updated.error) == (8, ("a", "b"), "boom: ü")
        assert (updated.trace_id, updated.runner_id, updated.host) == ("1-abc", "wf-9", "h2")
        assert joblog.get_job(RUN, "render:7", 1) == updated

    def test_segment_and_heartbeat_fields_round_trip(self, joblog: JobLog) -> None:
        record = joblog.start_job(run_id=RUN, kind="render", index=2, heartbeat_at="2026-01-01T00:00:01.000Z")
        assert (record.sha256, record.bytes, record.plan_hash) == ("", 0, "")
        beat = joblog.update_job(record, heartbeat_at="2026-01-01T00:00:06.000Z")
        assert joblog.get_job(RUN, "render:2", 1) == beat
        done = joblog.update_job(beat, status="SUCCEEDED", sha256="ab" * 32, bytes=123_456_789_012,
                                 plan_hash="cd" * 32, frames=8)
        assert (done.sha256, done.bytes, done.plan_hash) == ("ab" * 32, 123_456_789_012, "cd" * 32)
        assert done.heartbeat_at == "2026-01-01T00:00:06.000Z"
        assert joblog.get_job(RUN, "render:2", 1) == done
        assert joblog.jobs(RUN) == [done]
        # Read back as plain JSON types (`framefarm status --json` prints them).
        json.dumps(joblog.jobs(RUN)[0].to_dict())

    # -- updating jobs ------------------------------------------------------------------------

    def test_update_forwards(self, joblog: JobLog) -> None:
        record = joblog.start_job(run_id=RUN, kind="render", index=0, status="SUBMITTED")
        for status in ("PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED"):
            record = joblog.update_job(record, status=status)
            assert record.status == status
            assert joblog.get_job(RUN, "render:0", 1) == record
        assert record.started_at and record.stopped_at

    def test_update_may_skip_statuses(self, joblog: JobLog) -> None:
        record = joblog.start_job(run_id=RUN, kind="plan", status="SUBMITTED")
        assert joblog.update_job(record, status="FAILED", error="no sketch").status == "FAILED"

    def test_update_backwards_raises_and_changes_nothing(self, joblog: JobLog) -> None:
        record = joblog.start_job(run_id=RUN, kind="render", index=0, frames=2)
        with pytest.raises(StatusConflict):
            joblog.update_job(record, status="SUBMITTED", frames=5)
        assert joblog.get_job(RUN, "render:0", 1) == record

    @pytest.mark.parametrize("final", sorted(TERMINAL_STATUSES))
    def test_no_change_after_final(self, joblog: JobLog, final: str) -> None:
        record = joblog.start_job(run_id=RUN, kind="encode")
        done = joblog.update_job(record, status=final, frames=4)
        for changes in ({"status": "SUCCEEDED" if final == "FAILED" else "FAILED"},
                        {"status": "RUNNING"}, {"frames": 5}, {"status": final, "error": "x"}):
            with pytest.raises(StatusConflict):
                joblog.update_job(done, **changes)
            with pytest.raises(StatusConflict):
                joblog.update_job(record, **changes)  # a stale copy changes nothing either
        assert joblog.get_job(RUN, "encode", 1) == done

    def test_stale_copy_cannot_change_a_final_record(self, joblog: JobLog) -> None:
        mine = joblog.start_job(run_id=RUN, kind="render", index=1)
        joblog.update_job(mine, status="FAILED", error="killed")
        with pytest.raises(StatusConflict):
            joblog.update_job(mine, frames=10)
        stored = joblog.get_job(RUN, "render:1", 1)
        assert stored is not None and (stored.status, stored.frames) == ("FAILED", 0)

    def test_update_without_status_change(self, joblog: JobLog) -> None:
        record = joblog.start_job(run_id=RUN, kind="render", index=0)
        record = joblog.update_job(record, status="RUNNING", frames=1)
        record = joblog.update_job(record, frames=2)
        assert (record.status, record.frames) == ("RUNNING", 2)
        assert joblog.update_job(record) == record

    def test_stopped_at_set_on_final(self, joblog: JobLog) -> None:
        record = joblog.start_job(run_id=RUN, kind="render", index=0)
        assert not record.stopped_at
        done = joblog.update_job(record, status="SUCCEEDED")
        assert done.stopped_at >= done.started_at >= done.submitted_at

    def test_explicit_stopped_at_is_kept(self, joblog: JobLog) -> None:
        record = joblog.start_job(run_id=RUN, kind="plan")
        done = joblog.update_job(record, status="FAILED", stopped_at="2030-01-01T00:00:00.000Z")
        assert done.stopped_at == "2030-01-01T00:00:00.000Z"

    def test_started_at_set_on_running(self, joblog: JobLog) -> None:
        record = joblog.start_job(run_id=RUN, kind="plan", status="RUNNABLE")
        assert not record.started_at
        assert joblog.update_job(record, status="RUNNING").started_at

    def test_update_unknown_status(self, joblog: JobLog) -> None:
        record = joblog.start_job(run_id=RUN, kind="plan")
        with pytest.raises(UserError, match="unknown job status"):
            joblog.update_job(record, status="done")

    def test_update_missing_record(self, joblog: JobLog) -> None:
        ghost = JobRecord(run_id=RUN, job="plan", kind="plan", status="RUNNING")
        with pytest.raises(StatusConflict, match="missing"):
            joblog.update_job(ghost, frames=1)
        assert joblog.jobs(RUN) == []

    @pytest.mark.parametrize("field", ["run_id", "job", "attempt", "kind", "index", "colour"])
    def test_update_cannot_change_identity_or_unknown_fields(self, joblog: JobLog,
                                                             field: str) -> None:
        record = joblog.start_job(run_id=RUN, kind="render", index=0)
        with pytest.raises(TypeError):
            joblog.update_job(record, **{field: 1})
        assert joblog.jobs(RUN) == [record]

    def test_status_only_moves_forwards(self, joblog: JobLog) -> None:
        # Any sequence of status changes, from an up-to-date or a stale copy: the stored status
        # is what the forward moves alone would give.
        @settings(max_examples=40, deadline=None)
        @given(steps=st.lists(st.sampled_from(STATUSES), max_size=8))
        def check(steps: list[str]) -> None:
            run_id = uuid.uuid4().hex
            first = joblog.start_job(run_id=run_id, kind="plan", status="SUBMITTED")
            latest, expected = first, "SUBMITTED"
            for i, status in enumerate(steps):
                holder = first if i % 2 else latest
                unchanged = status == holder.status and expected not in TERMINAL_STATUSES
                if can_move(expected, status) or unchanged:
                    latest = joblog.update_job(holder, status=status)
                    expected = expected if unchanged else status
                else:
                    with pytest.raises(StatusConflict):
                        joblog.update_job(holder, status=status)
                stored = joblog.get_job(run_id, "plan", 1)
                assert stored is not None and stored.status == expected

        check()

    # -- reading jobs -------------------------------------------------------------------------

    def test_jobs_order(self, joblog: JobLog) -> None:
        joblog.start_job(run_id=RUN, kind="encode")
        joblog.start_job(run_id=RUN, kind="render", index=10)
        joblog.start_job(run_id=RUN, kind="render", index=2)
        joblog.start_job(run_id=RUN, kind="plan")
        joblog.start_job(run_id=RUN, kind="render", index=2)
        joblog.start_job(run_id="other", kind="plan")
        assert [(r.job, r.attempt) for r in joblog.jobs(RUN)] == [
            ("plan", 1), ("render:2", 1), ("render:2", 2), ("render:10", 1), ("encode", 1)]

    def test_jobs_of_unknown_run(self, joblog: JobLog) -> None:
        assert joblog.jobs("nope") == []
        assert joblog.latest_jobs("nope") == []
        assert joblog.get_job("nope", "plan", 1) is None

    def test_latest_jobs(self, joblog: JobLog) -> None:
        joblog.start_job(run_id=RUN, kind="plan")
        first = joblog.start_job(run_id=RUN, kind="render", index=0)
        joblog.update_job(first, status="FAILED", error="oom")
        second = joblog.start_job(run_id=RUN, kind="render", index=0)
        joblog.start_job(run_id=RUN, kind="render", index=1)
        latest = joblog.latest_jobs(RUN)
        assert [(r.job, r.attempt) for r in latest] == [("plan", 1), ("render:0", 2),
                                                        ("render:1", 1)]
        assert latest[1] == second

    # -- URLs and concurrency -----------------------------------------------------------------

    def test_reopen_url_sees_the_same_records(self, joblog: JobLog) -> None:
        record = joblog.start_job(run_id=RUN, kind="plan")
        joblog.put_run(RunRecord(run_id=RUN, plan={"size": 1}))
        again = open_joblog(joblog.url)
        assert again.url == joblog.url
        assert again.jobs(RUN) == [record]
        assert again.get_run(RUN) == RunRecord(run_id=RUN, plan={"size": 1})
        again.update_job(record, status="SUCCEEDED")
        stored = joblog.get_job(RUN, "plan", 1)
        assert stored is not None and stored.status == "SUCCEEDED"

    def test_threads_start_attempts_at_once(self, joblog: JobLog) -> None:
        got: list[int] = []

        def start() -> None:
            for _ in range(10):
                record = joblog.start_job(run_id=RUN, kind="render", index=0)
                joblog.update_job(record, status="SUCCEEDED", frames=record.attempt)
                got.append(record.attempt)

        threads = [threading.Thread(target=start) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(got) == list(range(1, 61))
        records = joblog.jobs(RUN)
        assert [r.attempt for r in records] == list(range(1, 61))
        assert all(r.status == "SUCCEEDED" and r.frames == r.attempt for r in records)

    # -- the run's lease: one driver at a time --------------------------------------------------

    def test_lease_is_taken_and_a_second_driver_refused(self, joblog: JobLog) -> None:
        before = time.time()
        lease = joblog.acquire_lease(RUN)
        assert (lease.run_id, lease.host, lease.pid) == (RUN, socket.gethostname(), os.getpid())
        assert lease.since and before + LEASE_SECONDS - 1 <= lease.expires_at <= time.time() + LEASE_SECONDS
        assert joblog.lease(RUN) == lease
        with pytest.raises(LeaseHeld) as caught:
            joblog.acquire_lease(RUN)
        message = str(caught.value)
        assert f"pid {os.getpid()} on {socket.gethostname()} since {lease.since}" in message
        assert f"framefarm cancel {RUN}" in message and "\n" not in message
        assert caught.value.exit_code == 2
        assert joblog.lease(RUN) == lease  # the refused driver changed nothing
        assert joblog.lease("other") is None  # a lease is the run's own
        assert joblog.acquire_lease("other").run_id == "other"

    def test_lease_is_renewed(self, joblog: JobLog) -> None:
        lease = joblog.acquire_lease(RUN, seconds=5)
        renewed = joblog.renew_lease(lease, seconds=600)
        assert renewed is not None
        assert (renewed.token, renewed.since, renewed.pid) == (lease.token, lease.since, lease.pid)
        assert renewed.expires_at >= lease.expires_at + 590
        assert joblog.lease(RUN) == renewed
        assert joblog.renew_lease(lease) is not None  # an older copy of one's own lease renews too

    def test_lease_is_released(self, joblog: JobLog) -> None:
        lease = joblog.acquire_lease(RUN)
        joblog.release_lease(lease)
        assert joblog.lease(RUN) is None
        assert joblog.renew_lease(lease) is None
        again = joblog.acquire_lease(RUN)
        joblog.release_lease(lease)  # releasing a lease given up before leaves the new one alone
        assert joblog.lease(RUN) == again

    def test_expired_lease_is_taken_over(self, joblog: JobLog) -> None:
        """A lease held on another machine lapses with its expiry; on this machine a live
        holder keeps it (a stopped driver is not a dead one)."""
        far = Lease(run_id=RUN, token="t-far", host="another-machine", pid=os.getpid(),
                    since="2026-01-01T00:00:00.000Z", expires_at=time.time() + 2.0)
        assert joblog._swap_lease(RUN, far, expect=None)
        assert joblog.lease(RUN) == far
        time.sleep(max(0.0, far.expires_at - time.time()) + 0.1)
        assert joblog.lease(RUN) is None  # stale: as good as none
        new = joblog.acquire_lease(RUN)
        assert new.token != far.token and joblog.lease(RUN) == new
        assert joblog.renew_lease(far) is None  # the old holder learns it lost the run
        joblog.release_lease(far)
        assert joblog.lease(RUN) == new

    def test_a_lease_whose_pid_was_used_again_is_stale(self, joblog: JobLog) -> None:
        """This process started long after the lease was taken: it is not its holder."""
        reused = Lease(run_id=RUN, token="t-old", host=socket.gethostname(), pid=os.getpid(),
                       since="2020-01-01T00:00:00.000Z", expires_at=time.time() + 600)
        assert joblog._swap_lease(RUN, reused, expect=None)
        assert joblog.lease(RUN) is None

    def test_a_live_holder_here_keeps_an_expired_lease(self, joblog: JobLog) -> None:
        mine = joblog.acquire_lease(RUN, seconds=0.2)
        time.sleep(0.3)
        assert joblog.lease(RUN) == mine
        with pytest.raises(LeaseHeld):
            joblog.acquire_lease(RUN)
        assert joblog.renew_lease(mine) is not None

    def test_lease_of_an_exited_process_is_taken_over(self, joblog: JobLog) -> None:
        """A lease whose holder's process is gone from this machine is stale before it expires;
        on another machine the pid says nothing, so only the expiry counts there."""
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
        dead_pid = int(gone.stdout)
        here = Lease(run_id=RUN, token="t-dead", host=socket.gethostname(), pid=dead_pid,
                     since="2026-01-01T00:00:00.000Z", expires_at=time.time() + 600)
        assert joblog._swap_lease(RUN, here, expect=None)
        assert joblog.lease(RUN) is None
        mine = joblog.acquire_lease(RUN)
        assert mine.pid == os.getpid()

        elsewhere = Lease(run_id="r2", token="t-far", host="another-machine", pid=dead_pid,
                          since="2026-01-01T00:00:00.000Z", expires_at=time.time() + 600)
        assert joblog._swap_lease("r2", elsewhere, expect=None)
        assert joblog.lease("r2") == elsewhere
        with pytest.raises(LeaseHeld, match=f"pid {dead_pid} on another-machine since"):
            joblog.acquire_lease("r2")

    def test_lease_of_a_killed_driver_is_taken_over(self, joblog: JobLog) -> None:
        """A driver in another process takes the lease (for ten minutes) and is SIGKILLed: the
        lease is refused while it lives and taken over as soon as it is gone."""
        if not self.crosses_processes:
            pytest.skip("no other process sees this job log")
        context: Any = multiprocessing.get_context("spawn")
        reports = context.Queue()
        driver = context.Process(target=_hold_lease, args=(joblog.url, RUN, reports))
        driver.start()
        try:
            held = reports.get(timeout=120)
            assert held == {"pid": driver.pid, "host": socket.gethostname()}
            with pytest.raises(LeaseHeld, match=f"pid {driver.pid} on "):
                joblog.acquire_lease(RUN)
        finally:
            os.kill(driver.pid, signal.SIGKILL)
            driver.join(timeout=60)
        assert driver.exitcode == -signal.SIGKILL
        assert joblog.lease(RUN) is None
        assert joblog.acquire_lease(RUN).pid == os.getpid()

    def test_racing_drivers_exactly_one_wins(self, joblog: JobLog) -> None:
        """Drivers race for the same runs, half of them held by a stale lease: each run goes
        to exactly one, and every other driver is told who has it."""
        runs = [f"race-{i}" for i in range(LEASE_RACES)]
        # Stale: held on another machine and not renewed past its expiry.
        stale = {run_id: Lease(run_id=run_id, token=f"t-{run_id}", host="another-machine",
                               pid=1, since="2026-01-01T00:00:00.000Z",
                               expires_at=time.time() - 1) for run_id in runs[::2]}
        for run_id, lease in stale.items():
            assert joblog._swap_lease(run_id, lease, expect=None)
        if self.crosses_processes:  # real processes, each with its own connection or client
            context: Any = multiprocessing.get_context("spawn")
            start, done, reports = (context.Barrier(LEASE_RACERS), context.Barrier(LEASE_RACERS + 1),
                                    context.Queue())
            racers: list[Any] = [context.Process(target=_race_for_leases,
                                                 args=(joblog.url, runs, start, done, reports))
                                 for _ in range(LEASE_RACERS)]
        else:
            start, done, reports = (threading.Barrier(LEASE_RACERS),
                                    threading.Barrier(LEASE_RACERS + 1), queue.Queue())
            racers = [threading.Thread(target=_race_for_leases,
                                       args=(joblog.url, runs, start, done, reports))
                      for _ in range(LEASE_RACERS)]
        for racer in racers:
            racer.start()
        try:
            got = [reports.get(timeout=120) for _ in racers]
            for run_id in runs:
                winners = [r for r in got if run_id in r["won"]]
                assert len(winners) == 1, (run_id, got)
                (winner,) = winners
                lease = joblog.lease(run_id)  # while every racer still lives
                assert lease is not None and lease.token == winner["won"][run_id]
                assert lease.pid == winner["pid"]
                if run_id in stale:
                    assert lease.token != stale[run_id].token
                for loser in got:
                    if loser is not winner:
                        assert f"pid {winner['pid']} on " in loser["lost"][run_id]
        finally:
            done.wait(timeout=120)
            for racer in racers:
                racer.join(timeout=60)
        if self.crosses_processes:
            assert [r.exitcode for r in racers] == [0] * LEASE_RACERS


def _hold_lease(url: str, run_id: str, reports: Any) -> None:
    """Take the run's lease for ten minutes, say so, and wait to be killed."""
    lease = open_joblog(url).acquire_lease(run_id, seconds=600)
    reports.put({"pid": lease.pid, "host": lease.host})
    time.sleep(600)


def _race_for_leases(url: str, runs: list[str], start: Any, done: Any, reports: Any) -> None:
    """Try to take each run's lease at once with the other racers; report, then stay alive
    (a dead holder's lease is stale) until the test has read every lease."""
    joblog = open_joblog(url)
    won: dict[str, str] = {}
    lost: dict[str, str] = {}
    for run_id in runs:
        start.wait(timeout=120)
        try:
            won[run_id] = joblog.acquire_lease(run_id).token
        except LeaseHeld as e:
            lost[run_id] = str(e)
    reports.put({"pid": os.getpid(), "won": won, "lost": lost})
    done.wait(timeout=120)
