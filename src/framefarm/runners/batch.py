"""AWS Batch: a plan job that submits the render array job (one child per chunk, each reading
AWS_BATCH_JOB_ARRAY_INDEX) and an encode job that depends on it — the job contract's variables
travel as `containerOverrides.environment`.

`submit_downstream` runs inside the plan container (called from `framefarm job`);
`BatchRunner` is `framefarm render --runner batch` on the user's machine.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from framefarm import config, tracing
from framefarm.errors import UserError
from framefarm.joblog import JobLog, StatusConflict, now_iso, open_joblog
from framefarm.model import JobOutcome, RunRecord
from framefarm.runners._base import Progress, ProgressCallback, Runner, RunRequest, RunResult

MAX_ARRAY_SIZE = 10_000
"""AWS Batch array jobs have 2 to 10,000 children."""

# Variables every downstream job gets from the plan job, when the plan job has them.
_PASSED_ON = (config.STORAGE, config.JOBLOG, config.JOBLOG_TTL_DAYS, config.JOB_CPUS,
              config.TRACEPARENT, config.XRAY_TRACE_ID)


@dataclass(frozen=True, kw_only=True)
class BatchTargets:
    """Where jobs go: the job queue and one job definition per job type."""

    queue: str
    render_definition: str
    encode_definition: str
    plan_definition: str = ""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> BatchTargets | None:
        """The targets named by FRAMEFARM_JOB_QUEUE and the job-definition variables, if set."""
        queue = environ.get(config.JOB_QUEUE, "").strip()
        if not queue:
            return None
        render = environ.get(config.RENDER_JOB_DEFINITION, "").strip()
        encode = environ.get(config.ENCODE_JOB_DEFINITION, "").strip()
        missing = [n for n, v in ((config.RENDER_JOB_DEFINITION, render),
                                  (config.ENCODE_JOB_DEFINITION, encode)) if not v]
        if missing:
            raise UserError(f"{config.JOB_QUEUE} is set but {' and '.join(missing)} is not: "
                            "name the job definitions to submit render and encode jobs with")
        return cls(queue=queue, render_definition=render, encode_definition=encode,
                   plan_definition=environ.get(config.PLAN_JOB_DEFINITION, "").strip())


@dataclass(frozen=True, kw_only=True)
class Submitted:
    """The Batch job ids of a run's downstream jobs."""

    render: str
    encode: str


def job_name(run_id: str, kind: str) -> str:
    """A Batch job name (letters, digits, - and _, at most 128) for a run's job."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"framefarm-{run_id}-{kind}")[:128]


def _overrides(env: Mapping[str, str]) -> dict[str, Any]:
    return {"environment": [{"name": k, "value": v} for k, v in env.items()]}


def batch_client(client: Any = None) -> Any:
    """The given Batch client, or one from the standard AWS configuration (retries with backoff
    and jitter, so SubmitJob's rate limit slows submission down instead of failing it)."""
    if client is not None:
        return client
    from framefarm._aws import client as aws_client

    return aws_client("batch")


def submit_downstream(*, run_id: str, chunks: int, total_frames: int, env: Mapping[str, str],
                      targets: BatchTargets, client: Any = None) -> Submitted:
    """Submit the render array job (or a plain job for one chunk) and the encode job that
    depends on it, each with the job contract in its container overrides."""
    if chunks > MAX_ARRAY_SIZE:
        suggest = math.ceil(total_frames / MAX_ARRAY_SIZE)
        raise UserError(f"{chunks} render jobs is more than AWS Batch's {MAX_ARRAY_SIZE} array "
                        f"children: set {config.FRAMES_PER_RENDER_JOB} to {suggest} or more")
    batch = batch_client(client)
    common = {name: env[name] for name in _PASSED_ON if env.get(name)}
    common[config.RUN_ID] = run_id
    render_env = {config.JOB_TYPE: "render", **common}
    render_args: dict[str, Any] = {}
    if chunks > 1:
        render_args["arrayProperties"] = {"size": chunks}
    # else a plain job (arrays have 2 or more children): it finds no index and renders the
    # plan's only chunk (names starting AWS_BATCH_ are Batch's own: overrides may not set them)
    render = batch.submit_job(jobName=job_name(run_id, "render"), jobQueue=targets.queue,
                              jobDefinition=targets.render_definition,
                              containerOverrides=_overrides(render_env), **render_args)
    encode_env = {config.JOB_TYPE: "encode", **common}
    if env.get(config.OUTPUT):
        encode_env[config.OUTPUT] = env[config.OUTPUT]
    encode = batch.submit_job(jobName=job_name(run_id, "encode"), jobQueue=targets.queue,
                              jobDefinition=targets.encode_definition,
                              dependsOn=[{"jobId": render["jobId"]}],
                              containerOverrides=_overrides(encode_env))
    return Submitted(render=render["jobId"], encode=encode["jobId"])


def record_submission(joblog: JobLog, *, run_id: str, submitted: Submitted,
                      plan_job_id: str = "") -> None:
    """Write the Batch ids to the run's record and the encode job as SUBMITTED."""
    run = joblog.get_run(run_id) or RunRecord(run_id=run_id)
    ids = {**run.runner_ids, "render": submitted.render, "encode": submitted.encode}
    if plan_job_id:
        ids["plan"] = plan_job_id
    joblog.put_run(RunRecord(run_id=run.run_id, created_at=run.created_at, plan=run.plan,
                             output=run.output, runner_ids=ids))
    joblog.start_job(run_id=run_id, kind="encode", attempt=1, status="SUBMITTED",
                     runner_id=submitted.encode, trace_id=tracing.current_trace_id())


def require_cloud_backends(storage_url: str, joblog_url: str) -> None:
    """Containers on AWS Batch cannot see this machine's files: storage and job log must be
    reachable from them."""
    local = [u for u in (storage_url, joblog_url)
             if u.startswith(("file:", "sqlite:", "memory:")) or "://" not in u]
    if local:
        raise UserError(f"AWS Batch containers cannot reach {' or '.join(local)}: use "
                        "--storage s3://BUCKET/PREFIX and --joblog dynamodb://TABLE "
                        "(the stack's outputs)")


def batch_statuses(run: RunRecord, *, chunks: int, client: Any = None) -> dict[str, dict[str, str]]:
    """What AWS Batch says of a run's jobs: job name -> status, reason and job id."""
    ids: dict[str, str] = {}
    if run.runner_ids.get("plan"):
        ids["plan"] = run.runner_ids["plan"]
    render = run.runner_ids.get("render")
    if render:
        if chunks > 1:
            ids.update({f"render:{i}": f"{render}:{i}" for i in range(chunks)})
        else:
            ids["render:0"] = render
    if run.runner_ids.get("encode"):
        ids["encode"] = run.runner_ids["encode"]
    if not ids:
        return {}
    batch = batch_client(client)
    by_id = {job_id: name for name, job_id in ids.items()}
    found: dict[str, dict[str, str]] = {}
    id_list = list(by_id)
    for start in range(0, len(id_list), 100):  # DescribeJobs takes 100 ids a call
        for job in batch.describe_jobs(jobs=id_list[start:start + 100])["jobs"]:
            name = by_id.get(job["jobId"])
            if name is not None:
                found[name] = {"status": job["status"], "reason": job.get("statusReason", ""),
                               "runner_id": job["jobId"]}
    return found


def _record_plan_submission(joblog: JobLog, run_id: str, job_id: str) -> None:
    """Record the submitted plan job without undoing what the plan container may already have
    written (it can start, even finish, before this runs): its attempt record wins, and the
    run's record is merged, not replaced."""
    with contextlib.suppress(StatusConflict):  # the plan job's own record is further along
        joblog.start_job(run_id=run_id, kind="plan", attempt=1, status="SUBMITTED", runner_id=job_id,
                         trace_id=tracing.current_trace_id())
    run = joblog.get_run(run_id)
    if run is None:
        joblog.put_run(RunRecord(run_id=run_id, created_at=now_iso(), runner_ids={"plan": job_id}))
    elif run.runner_ids.get("plan") != job_id:
        joblog.put_run(replace(run, runner_ids={**run.runner_ids, "plan": job_id}))


class BatchRunner(Runner):
    """Runs the pipeline on AWS Batch: submit the plan job (or plan here and submit the render
    and encode jobs), then optionally follow the run through the job log and DescribeJobs."""

    name = "batch"
    start_cost_seconds = 20.0

    def __init__(self, *, workers: int | None = None, targets: BatchTargets | None = None,
                 plan_here: bool = False, wait: bool = False, poll_seconds: float = 5.0,
                 client: Any = None) -> None:
        del workers  # Batch's compute environment decides how many jobs run at once
        self.targets = targets
        self.plan_here = plan_here
        self.wait = wait
        self.poll_seconds = poll_seconds
        self.client = client

    def run(self, request: RunRequest, *, on_progress: ProgressCallback | None = None) -> RunResult:
        """Start the run on AWS Batch; with `wait`, follow it to the end."""
        import os

        from framefarm.job import JobEnv, run_job
        from framefarm.steps import new_run_id
        from framefarm.steps.plan import store_sketch_file
        from framefarm.storage import open_storage

        env = dict(request.env)
        require_cloud_backends(env[config.STORAGE], env[config.JOBLOG])
        targets = self.targets or BatchTargets.from_environ({**os.environ, **env})
        if targets is None:
            raise UserError(f"--runner batch needs a job queue and job definitions: pass "
                            f"--stack NAME, or set {config.JOB_QUEUE}, "
                            f"{config.RENDER_JOB_DEFINITION} and {config.ENCODE_JOB_DEFINITION}")
        env.update({config.JOB_QUEUE: targets.queue,
                    config.RENDER_JOB_DEFINITION: targets.render_definition,
                    config.ENCODE_JOB_DEFINITION: targets.encode_definition,
                    config.JOB_START_SECONDS: str(self.start_cost_seconds)})
        local_output = env.pop(config.OUTPUT, "")
        if "://" in local_output:
            env[config.OUTPUT] = local_output  # a storage URL the containers can write to
            local_output = ""
        storage = open_storage(env[config.STORAGE])
        joblog = open_joblog(env[config.JOBLOG])
        run_id = env.setdefault(config.RUN_ID, new_run_id())
        sketch = Path(env[config.SKETCH])
        if not self.plan_here and "://" not in env[config.SKETCH] and sketch.is_file():
            env[config.SKETCH] = store_sketch_file(sketch, storage)  # where the plan job finds it
        if self.plan_here:
            plan = run_job(JobEnv.from_environ({**env, config.JOB_TYPE: "plan"}),
                           storage=storage, joblog=joblog)
            if not plan.succeeded:
                return RunResult(run_id=run_id, succeeded=False, plan=plan, failures=(plan,))
        else:
            if not targets.plan_definition:
                raise UserError(f"submitting the plan job needs its job definition: pass --stack "
                                f"or set {config.PLAN_JOB_DEFINITION} (or plan here: --plan-here)")
            batch = batch_client(self.client)
            submitted = batch.submit_job(
                jobName=job_name(run_id, "plan"), jobQueue=targets.queue,
                jobDefinition=targets.plan_definition,
                containerOverrides=_overrides({config.JOB_TYPE: "plan", **env}))
            _record_plan_submission(joblog, run_id, submitted["jobId"])
        details = {"output_url": storage.url_for(f"runs/{run_id}/output.mp4")}
        if not self.wait:
            return RunResult(run_id=run_id, succeeded=True, details={**details, "waited": False})
        result = self._follow(run_id, joblog, on_progress)
        if result.succeeded and local_output:
            storage.get_file(f"runs/{run_id}/output.mp4", Path(local_output))
        return result

    def _follow(self, run_id: str, joblog: JobLog,
                on_progress: ProgressCallback | None) -> RunResult:
        """Poll the job log and DescribeJobs until encode finishes or a job fails for good."""
        from framefarm.report import merged_jobs, run_status

        began = time.monotonic()
        pause = min(1.0, self.poll_seconds)  # quick at first, then every poll_seconds
        while True:
            with tracing.untraced():  # polling is waiting, not work: no spans for it
                run = joblog.get_run(run_id)
                plan = dict(run.plan) if run else {}
                chunks = int(plan.get("size") or 0)
                records = merged_jobs(joblog.jobs(run_id), batch_statuses(
                    run, chunks=chunks, client=self.client) if run else {})
            status = run_status(records)
            if on_progress is not None and chunks:
                renders = [r for r in records if r.kind == "render"]
                on_progress(Progress(run_id=run_id, total_frames=int(plan["total_frames"]),
                                     frames_done=sum(r.frames for r in renders), chunks=chunks,
                                     chunks_done=sum(r.status == "SUCCEEDED" for r in renders),
                                     elapsed=time.monotonic() - began))
            if status in ("SUCCEEDED", "FAILED"):
                failures = tuple(JobOutcome(job=r.job, run_id=run_id, succeeded=False,
                                            index=r.index, exit_code=1, error=r.error)
                                 for r in records if r.status == "FAILED")
                return RunResult(run_id=run_id, succeeded=status == "SUCCEEDED",
                                 failures=failures)
            time.sleep(pause)
            pause = min(pause * 2, self.poll_seconds)


# CloudFormation output names (deploy/cloudformation.yaml) -> what they configure.
STACK_OUTPUTS = {
    "JobQueue": config.JOB_QUEUE,
    "PlanJobDefinition": config.PLAN_JOB_DEFINITION,
    "RenderJobDefinition": config.RENDER_JOB_DEFINITION,
    "EncodeJobDefinition": config.ENCODE_JOB_DEFINITION,
    "StorageUrl": config.STORAGE,
    "JobLogUrl": config.JOBLOG,
}


def stack_settings(stack: str, *, client: Any = None) -> dict[str, str]:
    """The contract variables a deployed stack's outputs name (queue, job definitions, bucket,
    table), keyed by variable name."""
    if client is None:
        from framefarm._aws import client as aws_client

        client = aws_client("cloudformation")
    try:
        stacks = client.describe_stacks(StackName=stack)["Stacks"]
    except Exception as exc:  # botocore's ClientError: the stack does not exist
        raise UserError(f"cannot read CloudFormation stack {stack!r} ({exc}): deploy "
                        "deploy/cloudformation.yaml first, or check --stack and AWS_REGION") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    return {variable: outputs[key] for key, variable in STACK_OUTPUTS.items() if key in outputs}
