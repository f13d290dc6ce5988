"""AWS Step Functions: the run as one execution of the stack's state machine
(deploy/cloudformation.yaml, `StateMachine`), which runs the same Batch job definitions as
`--runner batch`: the plan job, then one render array job (or, above 10,000 chunks, a
Distributed Map of array jobs, one per slice), then the encode job.

The execution's name is the run id, so starting a run twice does not run it twice; a resume is
a new execution (RUN-resume-N) over the missing chunks. Its input is the job contract
(`execution_input`); the plan job, told by FRAMEFARM_EXECUTION that the state machine submits
the jobs after it, records the slices to render in the run's job-log item (`plan_hook`), where
the state machine reads them back. On the user's machine `StepFunctionsRunner` starts the
execution, follows the run in the job log (as on Batch) and the execution's status, shows the
execution beside the jobs (`framefarm status`), stops it (`cancel`) and resumes it.

The run's record keeps `execution` (the latest execution's ARN), `executions` (how many were
started) and `slices` (what the plan job recorded; JSON) in its runner ids, and the state
machine's ARN in its settings.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from framefarm import config, tracing
from framefarm.errors import UserError
from framefarm.joblog import JobLog, StatusConflict, now_iso, open_joblog
from framefarm.lifecycle import close_open_attempts
from framefarm.model import JobOutcome, RunRecord
from framefarm.runners._base import ProgressCallback, ResumeRequest, RunRequest, RunResult
from framefarm.runners._remote import stage_sketch, take_local_output
from framefarm.runners.batch import (
    MAX_ARRAY_SIZE,
    BatchRunner,
    _record_submitted,
    _unfinished,
    batch_client,
    batch_statuses,
    job_name,
)

if TYPE_CHECKING:
    from framefarm.job import Planned

MAX_SLICES = 1_000
"""The most slices (render array jobs of up to 10,000 children) one run is cut into: the
Distributed Map's items travel in the execution's state, which holds 256 KB."""
SLICE_CHARS = 12_000
"""The longest FRAMEFARM_CHUNKS of one slice (SubmitJob takes 30 KiB in all)."""
DOWNSTREAM = (config.STORAGE, config.JOBLOG, config.FRAME_TIMEOUT, config.OUTPUT,
              config.TRACEPARENT, config.XRAY_TRACE_ID)
"""The variables the state machine gives the render and encode jobs (the job definitions
give the rest: the job-log TTL, the job's CPUs); "" when unset."""
ACTIVE = frozenset({"RUNNING", "PENDING_REDRIVE"})
"""Execution statuses of a run that has not ended."""
_KEPT = (config.FRAME_TIMEOUT,)


def chunk_text(chunks: Sequence[int]) -> str:
    """FRAMEFARM_CHUNKS for `chunks` (sorted), consecutive ones as FIRST-LAST ranges."""
    parts: list[str] = []
    start = prev = None
    for chunk in chunks:
        if prev is not None and chunk == prev + 1:
            prev = chunk
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = chunk
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(parts)


def fanout(size: int, only: Sequence[int] | None = None) -> dict[str, Any]:
    """What the state machine renders: `count` slices, each an array job (`items`: its `size`
    and the FRAMEFARM_CHUNKS it renders, "" for every chunk of the plan; `first`, the first of
    them, which a run of one slice renders without a Map state). Every chunk of a plan
    within Batch's array limit is one slice; above it, or for a long list of chunks to resume,
    the chunks are cut into even slices (so none has a single child, which needs a plain job:
    only a run's only slice may)."""
    chunks = list(range(size)) if only is None else sorted(only)
    if only is None and size <= MAX_ARRAY_SIZE:
        items = [{"size": size, "chunks": ""}]
        return {"count": 1, "first": items[0], "items": items}
    if not chunks:
        return {"count": 0, "items": []}
    pieces = max(math.ceil(len(chunks) / MAX_ARRAY_SIZE),
                 math.ceil(len(chunk_text(chunks)) / SLICE_CHARS))
    while True:
        base, extra = divmod(len(chunks), pieces)  # sizes differ by at most one
        bounds = [i * base + min(i, extra) for i in range(pieces + 1)]
        items = [{"size": hi - lo, "chunks": chunk_text(chunks[lo:hi])}
                 for lo, hi in itertools.pairwise(bounds)]
        if all(len(str(item["chunks"])) <= SLICE_CHARS for item in items):
            break
        pieces += 1
    if len(items) > MAX_SLICES:
        raise UserError(f"{len(chunks)} chunks make {len(items)} slices, more than the "
                        f"{MAX_SLICES} one Step Functions run takes: set "
                        f"{config.FRAMES_PER_RENDER_JOB} higher")
    return {"count": len(items), "first": items[0], "items": items}


def execution_name(run_id: str, resume: int = 0) -> str:
    """The execution's name: the run id (letters, digits, - and _, at most 80; a run id with
    other characters, or longer, gets a short hash to stay unique), RUN-resume-N for a resume."""
    import hashlib

    suffix = f"-resume-{resume}" if resume else ""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", run_id)
    if name != run_id or len(name) + len(suffix) > 80:
        digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
        name = f"{name[:80 - len(suffix) - 9]}-{digest}"
    return name + suffix


def execution_arn(state_machine: str, name: str) -> str:
    """The ARN an execution of `state_machine` called `name` has (known before it starts)."""
    return state_machine.replace(":stateMachine:", ":execution:", 1) + f":{name}"


def console_url(arn: str) -> str:
    """The execution's page in the AWS console."""
    region = arn.split(":")[3] if arn.count(":") >= 4 else "us-east-1"
    return (f"https://{region}.console.aws.amazon.com/states/home?region={region}"
            f"#/v2/executions/details/{arn}")


def execution_input(env: Mapping[str, str], *, run_id: str, arn: str,
                    plan: bool, slices: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The execution's input: the job contract, as the state machine hands it to each job."""
    names = {kind: job_name(run_id, kind) for kind in ("plan", "render", "encode")}
    data: dict[str, Any] = {
        "run_id": run_id, "names": names, "plan": plan,
        "downstream": {name: env.get(name, "") for name in DOWNSTREAM}}
    if plan:
        contract = {k: v for k, v in env.items() if k in config.CONTRACT and v}
        contract.update({config.JOB_TYPE: "plan", config.RUN_ID: run_id, config.EXECUTION: arn})
        data["plan_environment"] = [{"Name": k, "Value": v} for k, v in contract.items()]
    if slices is not None:
        data["fanout"] = {"slices": dict(slices)}
    return data


def plan_hook(environ: Mapping[str, str]) -> Callable[[Planned], None] | None:
    """What a plan job started by the state machine (FRAMEFARM_EXECUTION set) does once it has
    planned: record the slices to render and its execution in the run's job-log item (the
    state machine's ReadPlan state reads them); it submits nothing."""
    execution = environ.get(config.EXECUTION, "").strip()
    if not execution:
        return None

    def record(planned: Planned) -> None:
        def recorded(found: RunRecord | None) -> RunRecord:
            run = found or RunRecord(run_id=planned.run_id, created_at=now_iso())
            ids = {**run.runner_ids, "execution": execution,
                   "slices": json.dumps(fanout(planned.plan.size), separators=(",", ":"))}
            if planned.job_id:
                ids["plan"] = planned.job_id
            return replace(run, runner_ids=ids, runner=StepFunctionsRunner.name)

        planned.joblog.update_run(planned.run_id, recorded)

    return record


def sfn_client(client: Any = None) -> Any:
    """The given Step Functions client, or one from the standard AWS configuration."""
    if client is not None:
        return client
    from framefarm._aws import client as aws_client

    return aws_client("stepfunctions")


def describe_execution(arn: str, *, client: Any = None) -> dict[str, Any] | None:
    """DescribeExecution, or None when there is no such execution."""
    sfn = sfn_client(client)
    try:
        found: dict[str, Any] = sfn.describe_execution(executionArn=arn)
    except sfn.exceptions.ExecutionDoesNotExist:
        return None
    return found


def execution_jobs(arn: str, *, client: Any = None) -> dict[str, str]:
    """The Batch jobs the execution submitted, from its history: `plan`, `render`, `encode`
    (the job ids of each's latest submission; a Distributed Map's are in its child
    executions, and not here)."""
    sfn = sfn_client(client)
    found: dict[str, str] = {}
    try:
        pages = sfn.get_paginator("get_execution_history").paginate(executionArn=arn)
        for page in pages:
            for event in page["events"]:
                details = event.get("taskSubmittedEventDetails") or {}
                if details.get("resourceType") != "batch":
                    continue
                output = json.loads(details.get("output") or "{}")
                name = str(output.get("JobName", ""))
                kind = name.rpartition("-")[2]
                if kind in ("plan", "render", "encode") and output.get("JobId"):
                    found[kind] = str(output["JobId"])
    except sfn.exceptions.ExecutionDoesNotExist:
        return {}
    return found


class StepFunctionsRunner(BatchRunner):
    """Runs the pipeline as an execution of the stack's state machine; with `wait`, follows
    it through the job log, DescribeJobs and DescribeExecution."""

    name = "stepfunctions"
    max_chunks = MAX_ARRAY_SIZE * MAX_SLICES

    @classmethod
    def unreachable(cls, urls: list[str]) -> str:
        return (f"AWS Step Functions runs its jobs on AWS Batch, whose containers cannot reach "
                f"{' or '.join(urls)}: use the stack's bucket and table (--stack NAME)")

    def __init__(self, *, workers: int | None = None, state_machine: str = "",
                 table: str = "", wait: bool = False, poll_seconds: float = 5.0,
                 client: Any = None, sfn: Any = None, kept: Mapping[str, str] | None = None,
                 announce: Callable[[str], None] | None = None) -> None:
        super().__init__(workers=workers, wait=wait, poll_seconds=poll_seconds, client=client,
                         kept=kept)
        self.state_machine = state_machine
        self.table = table
        self.sfn = sfn
        self.announce = announce or (lambda line: None)

    def settings(self) -> dict[str, str]:
        settings = {config.STATE_MACHINE: self.state_machine}
        if self.table:
            settings["table"] = self.table
        return settings

    @classmethod
    def reopen(cls, settings: Mapping[str, str], **options: Any) -> StepFunctionsRunner:
        options.setdefault("state_machine", settings.get(config.STATE_MACHINE, ""))
        options.setdefault("table", settings.get("table", ""))
        options.setdefault("wait", True)
        return cls(kept={k: settings[k] for k in _KEPT if settings.get(k)}, **options)

    def _check(self, env: Mapping[str, str]) -> None:
        self.check_backends(env[config.STORAGE], env[config.JOBLOG])
        if not self.state_machine:
            raise UserError(f"--runner stepfunctions needs the state machine: pass --stack NAME "
                            f"(a deployed deploy/cloudformation.yaml) or set "
                            f"{config.STATE_MACHINE}")
        if self.table and env[config.JOBLOG] != f"dynamodb://{self.table}":
            raise UserError(f"the state machine reads the job log dynamodb://{self.table}, not "
                            f"{env[config.JOBLOG]}: leave --joblog out (the stack's table is "
                            "the default)")

    def run(self, request: RunRequest, *, on_progress: ProgressCallback | None = None) -> RunResult:
        """Start the run's execution (or find it started: same name); with `wait`, follow it."""
        from framefarm.steps import new_run_id
        from framefarm.storage import open_storage

        env = dict(request.env)
        self._check(env)
        env.update(self.sizing_env())
        local_output = take_local_output(env)
        storage = open_storage(env[config.STORAGE])
        joblog = open_joblog(env[config.JOBLOG])
        run_id = env.setdefault(config.RUN_ID, new_run_id())
        stage_sketch(env, storage)  # where the plan job finds it
        name = execution_name(run_id)
        arn = execution_arn(self.state_machine, name)
        started = self._start(name, execution_input(env, run_id=run_id, arn=arn, plan=True), env)
        if started:
            self._record(joblog, run_id, arn, resumes=0, env=env)
        self.announce(f"run {run_id} {'started' if started else 'was already started'} on AWS "
                      f"Step Functions, see {console_url(arn)}")
        return self._finish(run_id, joblog, storage, local_output, on_progress)

    def resume(self, request: ResumeRequest, *,
               on_progress: ProgressCallback | None = None) -> RunResult:
        """Start a new execution that renders the request's chunks (none: only encodes)."""
        env = {**self.kept, **request.env}
        self._check(env)
        resumed = self._resumed(request, env)
        run_id, run, joblog, storage = resumed.run.run_id, resumed.run, resumed.joblog, resumed.storage
        size, todo, local_output = int(run.plan["size"]), resumed.todo, resumed.local_output
        slices = fanout(size, None if todo == list(range(size)) else todo)
        resumes = int(run.runner_ids.get("executions") or 1)
        name = execution_name(run_id, resumes)
        arn = execution_arn(self.state_machine, name)
        self._start(name, execution_input(env, run_id=run_id, arn=arn, plan=False,
                                          slices=slices), env)
        self._record(joblog, run_id, arn, resumes=resumes, env=env, slices=slices)
        latest = {r.job: r for r in joblog.jobs(run_id)}
        for chunk in todo:
            if f"render:{chunk}" in latest:
                _record_submitted(joblog, latest[f"render:{chunk}"], runner_id="")
        _record_submitted(joblog, latest.get("encode"), run_id=run_id, kind="encode",
                          runner_id="")
        self.announce(f"run {run_id}: resumed on AWS Step Functions ({len(todo)} chunks), see "
                      f"{console_url(arn)}")
        return self._finish(run_id, joblog, storage, local_output, on_progress)

    def _start(self, name: str, data: Mapping[str, Any], env: Mapping[str, str]) -> bool:
        """StartExecution; False when an execution of that name exists (the run was started)."""
        sfn = sfn_client(self.sfn)
        extra = {}
        if env.get(config.XRAY_TRACE_ID):  # the execution joins the run's X-Ray trace
            extra["traceHeader"] = env[config.XRAY_TRACE_ID]
        try:
            sfn.start_execution(stateMachineArn=self.state_machine, name=name,
                                input=json.dumps(data), **extra)
        except sfn.exceptions.ExecutionAlreadyExists:
            return False
        except sfn.exceptions.StateMachineDoesNotExist:
            raise UserError(f"state machine {self.state_machine} does not exist: deploy "
                            "deploy/cloudformation.yaml, or check --stack and AWS_REGION") from None
        return True

    def _record(self, joblog: JobLog, run_id: str, arn: str, *, resumes: int,
                env: Mapping[str, str], slices: Mapping[str, Any] | None = None) -> None:
        """The execution in the run's record (merged: the plan job may have written it
        already), and the plan job SUBMITTED for a new run."""
        if not resumes:
            with contextlib.suppress(StatusConflict):  # the plan job's own record is ahead
                joblog.start_job(run_id=run_id, kind="plan", attempt=1, status="SUBMITTED",
                                 trace_id=tracing.current_trace_id())
        def recorded(found: RunRecord | None) -> RunRecord:
            run = found or RunRecord(run_id=run_id, created_at=now_iso())
            ids = {k: v for k, v in run.runner_ids.items() if k not in ("terminated",)}
            ids.update({"execution": arn, "executions": str(resumes + 1)})
            if slices is not None:
                ids["slices"] = json.dumps(slices, separators=(",", ":"))
            settings = {**run.settings, **self.settings(),
                        **{k: env[k] for k in _KEPT if env.get(k)}}
            return replace(run, runner_ids=ids, runner=self.name, settings=settings)

        joblog.update_run(run_id, recorded)

    def cancel(self, run: RunRecord, *, joblog: JobLog) -> str:
        """Stop the run's execution, terminate its Batch jobs that have not finished, and
        record its open attempts CANCELLED."""
        return self._stop(run.run_id, joblog, reason="cancelled by `framefarm cancel`")

    def _stop(self, run_id: str, joblog: JobLog, *, reason: str) -> str:
        run = joblog.get_run(run_id)
        said: list[str] = []
        arn = run.runner_ids.get("execution", "") if run else ""
        if run is not None and arn:
            found = describe_execution(arn, client=self.sfn)
            if found is not None and found["status"] in ACTIVE:
                sfn_client(self.sfn).stop_execution(executionArn=arn, error="framefarm.Cancelled",
                                                    cause=reason[:32_000])
                said.append(f"execution {arn.rpartition(':')[2]} stopped")
            # Step Functions terminates a stopped execution's running .sync jobs itself; these
            # are terminated here too, so none is left whatever the execution's state.
            batch = batch_client(self.client)
            with_ids = _batch_view(run, execution_jobs(arn, client=self.sfn))
            for job_id, what in _unfinished(with_ids, joblog, batch):
                batch.terminate_job(jobId=job_id, reason=reason[:1024])
                if what:
                    said.append(what + " terminated")
            joblog.update_run(run_id, lambda found: replace(
                found, runner_ids={**found.runner_ids, "terminated": now_iso()})
                if found else None)
        close_open_attempts(joblog, run_id, status="CANCELLED", error=reason)
        return "on AWS Step Functions: " + ", ".join(said) if said else \
            "its AWS Step Functions execution had ended"

    def _take_over(self, run: RunRecord, joblog: JobLog) -> None:
        """Refuse to resume a run whose execution still runs, unless it was cancelled."""
        arn = run.runner_ids.get("execution", "")
        found = describe_execution(arn, client=self.sfn) if arn else None
        if found is None or found["status"] not in ACTIVE:
            return
        if run.runner_ids.get("terminated"):
            self._stop(run.run_id, joblog, reason="cancelled by `framefarm cancel`")
            return
        raise UserError(f"run {run.run_id} is still running on AWS Step Functions (execution "
                        f"{arn.rpartition(':')[2]}): wait for it to end (`framefarm status "
                        f"{run.run_id}`) or stop it with `framefarm cancel {run.run_id}`, then "
                        "resume it")

    def _statuses(self, run: RunRecord, chunks: int) -> dict[str, dict[str, str]]:
        return self.job_statuses(run, chunks=chunks, client=self.client, sfn=self.sfn)

    def _ended(self, run: RunRecord) -> RunResult | None:
        """The run's outcome when its execution has ended without the job log saying so (a job
        that never started, a state that failed): FAILED, or CANCELLED when it was stopped."""
        arn = run.runner_ids.get("execution", "")
        found = describe_execution(arn, client=self.sfn) if arn else None
        if found is None or found["status"] in ACTIVE or found["status"] == "SUCCEEDED":
            return None
        if found["status"] == "ABORTED":
            return RunResult(run_id=run.run_id, succeeded=False, cancelled=True)
        error = f"{found.get('error', found['status'])}: {found.get('cause', '')}".strip(": ")
        return RunResult(run_id=run.run_id, succeeded=False, failures=(JobOutcome(
            job="execution", run_id=run.run_id, succeeded=False, exit_code=1,
            error=f"the Step Functions execution {found['status']} ({error[:2000]})"),))

    @classmethod
    def job_statuses(cls, run: RunRecord, *, chunks: int, client: Any = None,
                     sfn: Any = None) -> dict[str, dict[str, str]]:
        """DescribeJobs of the jobs the run's latest execution submitted."""
        arn = run.runner_ids.get("execution", "")
        if not arn:
            return {}
        return batch_statuses(_batch_view(run, execution_jobs(arn, client=sfn)), chunks=chunks,
                              client=client)

    @classmethod
    def engine_view(cls, run: RunRecord) -> dict[str, str]:
        """The run's execution: its ARN, status, console page, and how it failed."""
        arn = run.runner_ids.get("execution", "")
        if not arn:
            return {}
        found = describe_execution(arn) or {"status": "NOT FOUND"}
        view = {"execution": arn, "status": str(found["status"]), "url": console_url(arn)}
        if found.get("error"):
            view["error"] = f"{found['error']}: {str(found.get('cause', ''))[:500]}"
        return view


def _batch_view(run: RunRecord, jobs: Mapping[str, str]) -> RunRecord:
    """`run` with the Batch ids of its latest execution's jobs as runner ids, as a Batch run
    keeps them (a resume's render job renders the chunks of its slice)."""
    ids = {k: v for k, v in jobs.items() if k in ("plan", "encode")}
    if "render" in jobs:
        ids["render"] = jobs["render"]
        slices = json.loads(run.runner_ids.get("slices") or "{}")
        listed = (slices.get("first") or {}).get("chunks", "")
        if listed and int(slices.get("count", 0)) == 1:
            ids["chunks"] = ",".join(map(str, _expand(listed)))
    elif "plan" not in jobs and run.runner_ids.get("plan"):
        ids["plan"] = run.runner_ids["plan"]
    return replace(run, runner_ids=ids)


def _expand(listed: str) -> list[int]:
    chunks: list[int] = []
    for part in listed.split(","):
        first, dash, last = part.partition("-")
        chunks += range(int(first), int(last if dash else first) + 1)
    return chunks

