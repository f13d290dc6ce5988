"""Recording a submitted plan job never undoes what the plan container already wrote."""

from __future__ import annotations

import uuid

from framefarm.joblog.memory import MemoryJobLog
from framefarm.model import RunRecord
from framefarm.runners.batch import _record_plan_submission


def test_before_the_plan_job_starts() -> None:
    joblog = MemoryJobLog(uuid.uuid4().hex)
    _record_plan_submission(joblog, "r", "job-1")
    [plan] = joblog.jobs("r")
    assert (plan.job, plan.status, plan.runner_id) == ("plan", "SUBMITTED", "job-1")
    run = joblog.get_run("r")
    assert run is not None and dict(run.runner_ids) == {"plan": "job-1"} and run.created_at


def test_after_the_plan_job_finished_first() -> None:
    joblog = MemoryJobLog(uuid.uuid4().hex)
    record = joblog.start_job(run_id="r", kind="plan", attempt=1, runner_id="job-1")
    joblog.update_job(record, status="SUCCEEDED")
    joblog.put_run(RunRecord(run_id="r", created_at="t", plan={"size": 4},
                             runner_ids={"render": "job-2", "encode": "job-3"}))
    _record_plan_submission(joblog, "r", "job-1")
    assert [(j.status, j.attempt) for j in joblog.jobs("r")] == [("SUCCEEDED", 1)]
    assert joblog.get_run("r") == RunRecord(
        run_id="r", created_at="t", plan={"size": 4},
        runner_ids={"render": "job-2", "encode": "job-3", "plan": "job-1"})
