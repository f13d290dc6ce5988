"""Recording Batch submissions in the job log: a submitted plan job never undoes what the plan
container already wrote; a run's record names its runner and keeps every field; a resumed
run's children map to the chunks they render; a container's attempt number never collides
with an earlier submission's."""

from __future__ import annotations

import itertools
import uuid

from framefarm.joblog.memory import MemoryJobLog
from framefarm.lifecycle import recorded_attempt
from framefarm.model import RunRecord
from framefarm.runners import reopen_runner
from framefarm.runners.batch import (
    BatchRunner,
    BatchTargets,
    RenderJob,
    Submitted,
    _record_plan_submission,
    batch_job_ids,
    chunk_groups,
    record_submission,
    render_jobs,
)

TARGETS = {"FRAMEFARM_JOB_QUEUE": "q", "FRAMEFARM_RENDER_JOB_DEFINITION": "r",
           "FRAMEFARM_ENCODE_JOB_DEFINITION": "e"}


def _joblog() -> MemoryJobLog:
    return MemoryJobLog(uuid.uuid4().hex)


def test_before_the_plan_job_starts() -> None:
    joblog = _joblog()
    _record_plan_submission(joblog, "r", "job-1", TARGETS)
    [plan] = joblog.jobs("r")
    assert (plan.job, plan.status, plan.runner_id) == ("plan", "SUBMITTED", "job-1")
    run = joblog.get_run("r")
    assert run is not None and dict(run.runner_ids) == {"plan": "job-1"} and run.created_at
    assert (run.runner, dict(run.settings)) == ("batch", TARGETS)


def test_after_the_plan_job_finished_first() -> None:
    joblog = _joblog()
    record = joblog.start_job(run_id="r", kind="plan", attempt=1, runner_id="job-1")
    joblog.update_job(record, status="SUCCEEDED")
    joblog.put_run(RunRecord(run_id="r", created_at="t", plan={"size": 4},
                             runner_ids={"render": "job-2", "encode": "job-3"}, runner="batch",
                             settings={"FRAMEFARM_FRAME_TIMEOUT": "30"}))
    _record_plan_submission(joblog, "r", "job-1", TARGETS)
    assert [(j.status, j.attempt) for j in joblog.jobs("r")] == [("SUCCEEDED", 1)]
    assert joblog.get_run("r") == RunRecord(
        run_id="r", created_at="t", plan={"size": 4}, runner="batch",
        runner_ids={"render": "job-2", "encode": "job-3", "plan": "job-1"},
        settings={"FRAMEFARM_FRAME_TIMEOUT": "30", **TARGETS})


def test_record_submission_keeps_the_record_and_names_the_runner() -> None:
    joblog = _joblog()
    joblog.put_run(RunRecord(run_id="r", created_at="t", plan={"size": 3}, output="s3://b/v.mp4",
                             runner_ids={"plan": "p"}, cancelled_at=""))
    record_submission(joblog, run_id="r", plan_job_id="p", submitted=Submitted(
        renders=(RenderJob(job_id="a"),), encode="e",
        settings={**TARGETS, "FRAMEFARM_FRAME_TIMEOUT": "20"}))
    run = joblog.get_run("r")
    assert run == RunRecord(run_id="r", created_at="t", plan={"size": 3}, output="s3://b/v.mp4",
                            runner_ids={"plan": "p", "render": "a", "encode": "e"},
                            runner="batch", settings={**TARGETS, "FRAMEFARM_FRAME_TIMEOUT": "20"})
    assert [(j.job, j.status, j.attempt, j.runner_id) for j in joblog.jobs("r")] == [
        ("encode", "SUBMITTED", 1, "e")]
    # and reopen rebuilds the runner from it: resume follows the run unless told not to
    runner = reopen_runner(run)
    assert isinstance(runner, BatchRunner) and runner.wait
    assert runner.targets == BatchTargets(queue="q", render_definition="r", encode_definition="e")
    assert runner.kept == {"FRAMEFARM_FRAME_TIMEOUT": "20"}
    assert runner.settings() == TARGETS


def test_a_resume_replaces_the_ids_and_records_its_chunks_submitted() -> None:
    """Chunks 1 and 3 failed and the encode never ran; the resume's array renders 1 and 3."""
    joblog = _joblog()
    joblog.put_run(RunRecord(run_id="r", plan={"size": 4}, runner="batch",
                             runner_ids={"plan": "p", "render": "old", "encode": "old-e"}))
    for index, status in ((0, "SUCCEEDED"), (1, "FAILED"), (2, "SUCCEEDED"), (3, "CANCELLED")):
        record = joblog.start_job(run_id="r", kind="render", index=index, attempt=1,
                                  runner_id=f"old:{index}")
        joblog.update_job(record, status=status)
    joblog.start_job(run_id="r", kind="encode", attempt=1, status="SUBMITTED", runner_id="old-e")
    submitted = Submitted(renders=(RenderJob(job_id="new", chunks=(1, 3)),), encode="new-e")
    record_submission(joblog, run_id="r", submitted=submitted)

    run = joblog.get_run("r")
    assert run is not None
    assert dict(run.runner_ids) == {"plan": "p", "render": "new", "chunks": "1,3",
                                    "encode": "new-e"}
    assert batch_job_ids(run, chunks=4) == {"plan": "p", "render:1": "new:0",
                                            "render:3": "new:1", "encode": "new-e"}
    latest = {r.job: r for r in joblog.latest_jobs("r")}
    assert [(latest[j].attempt, latest[j].status, latest[j].runner_id)
            for j in ("render:1", "render:3", "encode")] == [
        (2, "SUBMITTED", "new:0"), (2, "SUBMITTED", "new:1"), (1, "SUBMITTED", "new-e")]
    assert latest["render:0"].status == "SUCCEEDED"  # not resubmitted: left alone

    # Batch counts the new child's attempts from 1: the job log goes on from 2.
    assert recorded_attempt(joblog, run_id="r", kind="render", index=1, attempt=1,
                         job_id="new:0") is None
    taken = joblog.start_job(run_id="r", kind="render", index=1, attempt=None, runner_id="new:0")
    assert (taken.attempt, taken.status) == (2, "RUNNING")
    # The encode's submitted record is its own: Batch's attempt 1 takes it over.
    assert recorded_attempt(joblog, run_id="r", kind="encode", index=None, attempt=1,
                         job_id="new-e") == 1


def test_a_containers_attempt_is_batchs_when_nobody_else_has_it() -> None:
    joblog = _joblog()
    assert recorded_attempt(joblog, run_id="r", kind="render", index=0, attempt=1, job_id="a:0") == 1
    joblog.start_job(run_id="r", kind="render", index=0, attempt=1, runner_id="a:0")
    # Batch's retry of a container that died without a word
    assert recorded_attempt(joblog, run_id="r", kind="render", index=0, attempt=2, job_id="a:0") == 2
    # the same attempt number again never takes over a started attempt
    assert recorded_attempt(joblog, run_id="r", kind="render", index=0, attempt=1,
                         job_id="a:0") is None
    # not on Batch: as given
    assert recorded_attempt(joblog, run_id="r", kind="render", index=0, attempt=3, job_id="") == 3


def test_one_chunk_and_several_render_jobs_map_to_their_chunks() -> None:
    one = RunRecord(run_id="r", runner_ids={"render": "a", "chunks": "5", "encode": "e"})
    assert batch_job_ids(one, chunks=8) == {"render:5": "a", "encode": "e"}
    first = RunRecord(run_id="r", runner_ids={"plan": "p", "render": "a", "encode": "e"})
    assert batch_job_ids(first, chunks=2) == {"plan": "p", "render:0": "a:0", "render:1": "a:1",
                                              "encode": "e"}
    many = Submitted(renders=(RenderJob(job_id="a", chunks=(1, 2)),
                              RenderJob(job_id="b", chunks=(7,)),
                              RenderJob(job_id="c", chunks=(8, 9))), encode="e")
    ids = many.runner_ids()
    assert ids == {"encode": "e", "render": "a", "chunks": "1,2", "render.2": "b",
                   "chunks.2": "7", "render.3": "c", "chunks.3": "8,9"}
    assert render_jobs(ids) == list(many.renders)
    assert batch_job_ids(RunRecord(run_id="r", runner_ids=ids), chunks=10) == {
        "render:1": "a:0", "render:2": "a:1", "render:7": "b", "render:8": "c:0",
        "render:9": "c:1", "encode": "e"}
    # no chunk left to render: only the encode job
    assert batch_job_ids(RunRecord(run_id="r", runner_ids={"encode": "e"}), chunks=4) == {
        "encode": "e"}


def test_long_chunk_lists_are_cut_to_fit_a_submission() -> None:
    chunks = list(range(0, 10_000, 2))
    groups = chunk_groups(chunks, limit=4000)
    assert [c for group in groups for c in group] == chunks
    assert all(len(",".join(map(str, g))) <= 4000 for g in groups)
    # 24,444 characters in all: each group as full as it can be
    assert len(groups) == 7
    assert all(len(",".join(map(str, (*g, nxt[0])))) > 4000 for g, nxt in itertools.pairwise(groups))
    assert chunk_groups([3, 7]) == [(3, 7)]
    assert chunk_groups([]) == []
