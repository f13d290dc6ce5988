"""The container entrypoint: `framefarm job` reads JOB_TYPE and the job contract from the
environment, runs that one step, and records the attempt in the job log.

Every runner starts steps through `run_job`: AWS Batch through the container's command, the local
runner in its worker processes with the same variables, so a step never knows who started it.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from opentelemetry.trace import Span

from framefarm import _otel, config, tracing
from framefarm.errors import FramefarmError, SketchError, UserError
from framefarm.joblog import JobLog, open_joblog
from framefarm.model import JobKind, JobOutcome, JobRecord, RunRecord
from framefarm.runners.batch import BatchTargets, record_submission, submit_downstream
from framefarm.steps import (
    EncodeRequest,
    PlanRequest,
    RenderRequest,
    new_run_id,
    run_encode,
    run_plan,
    run_render,
)
from framefarm.steps._keys import plan_key
from framefarm.steps.plan import read_plan
from framefarm.storage import Storage, open_storage

PROGRESS_INTERVAL = 0.5
"""Seconds between a render job's frame-count updates in the job log."""


@dataclass(frozen=True, kw_only=True)
class JobEnv:
    """The job contract, parsed: what `framefarm job` reads from its environment."""

    job_type: JobKind
    storage: str
    joblog: str
    run_id: str = ""
    index: int | None = None
    output: str = ""
    batch_job_id: str = ""
    attempt: int | None = None
    cpus: int = 0
    """CPUs the job may use (FRAMEFARM_JOB_CPUS; 0: all of the machine's)."""
    plan: PlanRequest | None = None
    """What to plan: set for plan jobs only."""
    batch: BatchTargets | None = None
    """Where a plan job on AWS Batch submits the render and encode jobs (FRAMEFARM_JOB_QUEUE …)."""
    runner_id: str = ""
    """The runner's own id of this job when it is not AWS Batch's (a Temporal activity's
    workflow/activity id): recorded in the job log. Set by the runner, not by a variable."""
    contract: Mapping[str, str] = field(default_factory=dict)
    """Every job-contract variable that was set, as it was set."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> JobEnv:
        """Parse the contract; a missing or bad variable is a UserError naming it."""
        env = dict(os.environ if environ is None else environ)

        def get(name: str) -> str:
            return env.get(name, "").strip()

        def number(name: str) -> int | None:
            text = get(name)
            if not text:
                return None
            try:
                return int(text)
            except ValueError:
                raise UserError(f"{name}={text!r} is not a whole number: set it to e.g. 30") from None

        def seconds(name: str) -> float:
            text = get(name)
            try:
                value = float(text) if text else 0.0
            except ValueError:
                value = -1.0
            if not value >= 0:
                raise UserError(f"{name}={text!r} is not a number of seconds: set it to e.g. 20")
            return value

        job_type = get(config.JOB_TYPE)
        if job_type not in ("plan", "render", "encode"):
            shown = repr(job_type) if job_type else "not set"
            raise UserError(f"{config.JOB_TYPE} is {shown}: set it to plan, render or encode")
        index = number(config.ARRAY_INDEX)
        run_id = get(config.RUN_ID)
        if job_type in ("render", "encode") and not run_id:
            raise UserError(f"{config.RUN_ID} is not set: {job_type} jobs need the run id of the plan")
        if job_type == "plan" and not get(config.SKETCH):
            raise UserError(f"{config.SKETCH} is not set: point it at the sketch (a .py file, "
                            "module:function or storage URL)")
        plan = None
        if job_type == "plan":
            plan = PlanRequest(
                sketch=get(config.SKETCH), run_id=run_id or None,
                total_frames=number(config.TOTAL_FRAMES),
                frames_per_job=None if get(config.FRAMES_PER_RENDER_JOB).lower() == "auto"
                else number(config.FRAMES_PER_RENDER_JOB),
                width=number(config.WIDTH), height=number(config.HEIGHT),
                fps=get(config.FPS) or None, crf=number(config.CRF),
                preset=get(config.PRESET) or None, output=get(config.OUTPUT),
                keep_frames=get(config.KEEP_FRAMES).lower() in ("1", "true", "yes"),
                parallelism=number(config.PARALLELISM) or 0,
                start_cost=seconds(config.JOB_START_SECONDS))
        return cls(
            job_type=job_type,  # type: ignore[arg-type]
            storage=get(config.STORAGE) or config.default_storage_url(),
            joblog=get(config.JOBLOG) or config.default_joblog_url(),
            run_id=run_id, index=index, output=get(config.OUTPUT),
            batch_job_id=get(config.BATCH_JOB_ID), attempt=number(config.BATCH_JOB_ATTEMPT),
            cpus=number(config.JOB_CPUS) or 0, plan=plan,
            batch=BatchTargets.from_environ(env) if job_type == "plan" else None,
            contract={k: env[k] for k in config.CONTRACT if env.get(k)})


def run_job(env: JobEnv, *, storage: Storage | None = None, joblog: JobLog | None = None,
            on_frame: Callable[[int], None] | None = None) -> JobOutcome:
    """Run the one step `env` names, recording the attempt; never raises for a failed step.

    The attempt is one span of the run's trace (a child of the context in TRACEPARENT), and its
    spans are stored with the run when it ends.
    """
    storage = storage or open_storage(env.storage)
    joblog = joblog or open_joblog(env.joblog)
    # Only a plan job may come without a run id. On AWS Batch it is the plan job's own id, so a
    # retried attempt (a Spot instance taken back) plans the same run instead of a second one.
    run_id = env.run_id or (f"batch-{env.batch_job_id}" if env.batch_job_id else new_run_id())
    host = socket.gethostname()
    attributes: dict[str, str | int] = {"framefarm.run_id": run_id, "host.name": host}
    if env.batch_job_id:
        attributes["aws.batch.job_id"] = env.batch_job_id
    with tracing.job_span(env.job_type, env=env.contract, attributes=attributes) as span:
        trace_id = tracing.current_trace_id()
        outcome = _run_step(env, run_id=run_id, storage=storage, joblog=joblog, on_frame=on_frame,
                            span=span, host=host, trace_id=trace_id)
    # The encode job is the run's last: it merges every job's spans into trace.jsonl.
    _otel.finish_job(storage, run_id, trace_id=trace_id, merge=env.job_type == "encode",
                     name=f"{outcome.job.replace(':', '-')}.{span.get_span_context().span_id:016x}")
    return outcome


def _run_step(env: JobEnv, *, run_id: str, storage: Storage, joblog: JobLog,
              on_frame: Callable[[int], None] | None, span: Span, host: str,
              trace_id: str) -> JobOutcome:
    if env.job_type == "render" and env.index is None:
        env = replace(env, index=_only_chunk(run_id, storage))
    record = joblog.start_job(run_id=run_id, kind=env.job_type, index=env.index,
                              attempt=env.attempt, host=host,
                              runner_id=env.runner_id or env.batch_job_id, trace_id=trace_id)
    span.set_attributes({"framefarm.job": record.job, "framefarm.attempt": record.attempt})
    if record.index is not None:
        span.set_attribute("framefarm.chunk", record.index)

    def plan() -> _Done:
        assert env.plan is not None
        made = run_plan(replace(env.plan, run_id=run_id), storage=storage)
        before = joblog.get_run(run_id)
        ids = dict(before.runner_ids) if before else {}
        joblog.put_run(RunRecord(run_id=run_id, created_at=record.started_at,
                                 plan=made.to_dict(chunks=False), output=made.output,
                                 runner_ids=ids))
        if env.batch is not None and not ("render" in ids and "encode" in ids):
            # (an earlier attempt of this plan job that submitted them is not repeated). They
            # join the plan's trace: as its siblings under the upstream span, else its children.
            contract = {**tracing.context_env(), **env.contract}
            submitted = submit_downstream(run_id=run_id, chunks=made.size,
                                          total_frames=made.total_frames, env=contract,
                                          targets=env.batch)
            record_submission(joblog, run_id=run_id, submitted=submitted,
                              plan_job_id=env.batch_job_id)
        return _Done({"size": made.size, "total_frames": made.total_frames,
                      "frames_per_job": made.frames_per_job, "output": made.output,
                      "width": made.video.width, "height": made.video.height,
                      "fps": made.video.fps}, [plan_key(run_id)], made.total_frames)

    def render() -> _Done:
        assert env.index is not None
        rendered = run_render(RenderRequest(run_id=run_id, index=env.index, cpus=env.cpus),
                              storage=storage,
                              on_frame=_FrameProgress(joblog, record, on_frame))
        return _Done(asdict(rendered), [rendered.segment], rendered.frames)

    def encode() -> _Done:
        encoded = run_encode(EncodeRequest(run_id=run_id, output=env.output), storage=storage)
        run = joblog.get_run(run_id)
        if run is not None:
            joblog.put_run(replace(run, output=encoded.output))
        return _Done(asdict(encoded), [encoded.key, encoded.output], encoded.frames)

    step = {"plan": plan, "render": render, "encode": encode}[env.job_type]
    try:
        done = step()
    except BaseException as exc:
        tracing.fail(span, exc, describe_error(exc)[0].splitlines()[-1])
        outcome = _failed(joblog, record, exc)
        if not isinstance(exc, Exception):
            raise  # KeyboardInterrupt, SystemExit: recorded as FAILED, then let through
        return outcome
    current = joblog.get_job(run_id, record.job, record.attempt) or record
    joblog.update_job(current, status="SUCCEEDED", frames=done.frames, outputs=done.outputs)
    return JobOutcome(job=record.job, run_id=run_id, succeeded=True, index=record.index,
                      result=done.result)


def _only_chunk(run_id: str, storage: Storage) -> int:
    """The index of a render job started without one: a plain (non-array) Batch job renders a
    plan of one chunk, and Batch reserves AWS_BATCH_* names, so nobody may set the index."""
    size = read_plan(run_id, storage).size
    if size != 1:
        raise UserError(f"{config.ARRAY_INDEX} is not set: run {run_id} has {size} chunks, so a "
                        "render job needs its chunk index (submit it as an array job)")
    return 0


@dataclass(frozen=True)
class _Done:
    """What a step hands back to be recorded: its result, output keys and frame count."""

    result: Mapping[str, Any]
    outputs: list[str]
    frames: int


def describe_error(exc: BaseException) -> tuple[str, int]:
    """The text the user sees for a failed job, and the exit code."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", 130
    if isinstance(exc, SketchError):
        return exc.full_text(), exc.exit_code
    if isinstance(exc, UserError):
        return str(exc), exc.exit_code
    exit_code = exc.exit_code if isinstance(exc, FramefarmError) else 1
    return "".join(traceback.format_exception(exc)).rstrip(), exit_code


def _failed(joblog: JobLog, record: JobRecord, exc: BaseException) -> JobOutcome:
    text, exit_code = describe_error(exc)
    current = joblog.get_job(record.run_id, record.job, record.attempt) or record
    joblog.update_job(current, status="FAILED", error=text)
    return JobOutcome(job=record.job, run_id=record.run_id, succeeded=False, index=record.index,
                      exit_code=exit_code, error=text)


class _FrameProgress:
    """Counts frames; writes the count to the job log at most every PROGRESS_INTERVAL seconds."""

    def __init__(self, joblog: JobLog, record: JobRecord,
                 forward: Callable[[int], None] | None) -> None:
        self._joblog = joblog
        self._record = record
        self._forward = forward
        self._last = time.monotonic()

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self._last >= PROGRESS_INTERVAL:
            self._last = now
            self._record = self._joblog.update_job(self._record, frames=done)
        if self._forward is not None:
            self._forward(done)


def main(environ: Mapping[str, str] | None = None) -> int:
    """`framefarm job`: run one step from the environment; the exit code says how it went."""
    try:
        env = JobEnv.from_environ(environ)
        _otel.setup(environ)
        outcome = run_job(env)
    except UserError as exc:
        print(f"framefarm job: {exc}", file=sys.stderr)
        return exc.exit_code
    if outcome.succeeded:
        print(f"framefarm job: {outcome.job} of run {outcome.run_id} SUCCEEDED", file=sys.stderr)
        if env.job_type == "plan":
            print(outcome.run_id)
        return 0
    print(f"framefarm job: {outcome.job} of run {outcome.run_id} FAILED\n{outcome.error}",
          file=sys.stderr)
    return outcome.exit_code
