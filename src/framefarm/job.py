"""The container entrypoint: `framefarm job` reads JOB_TYPE and the job contract from the
environment, runs that one step, and records the attempt in the job log.

Every runner starts steps through `run_job`: AWS Batch through the container's command, the local
runner in its worker processes with the same variables, so a step never knows who started it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from opentelemetry.trace import Span

from framefarm import _otel, config, tracing
from framefarm.assets import parse_assets
from framefarm.errors import FramefarmError, SketchError, TransientError, UserError
from framefarm.integrity import describe_chunk
from framefarm.joblog import JobLog, StatusConflict, now_iso, open_joblog
from framefarm.lifecycle import HEARTBEAT_SECONDS, expected_segments, recorded_attempt
from framefarm.limits import check_output_name, check_run_id
from framefarm.model import Chunk, JobKind, JobOutcome, JobRecord, Plan, RunRecord
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
FRAME_TIMEOUT_EXIT = 1
"""A render job whose frame ran out of time exits with this (a retry may fix it)."""
say_timeouts = True
"""Whether a frame timeout is also told on stderr (a container's log); a runner that reports
it itself turns this off in its workers."""


@dataclass(frozen=True, kw_only=True)
class Planned:
    """A plan job's result, as the hook its runner attached (JobEnv.after_plan) gets it."""

    run_id: str
    plan: Plan
    before: RunRecord
    """The run's record as the plan job left it, the plan just recorded in it (runner ids of an
    earlier attempt's submissions, cancelled_at …)."""
    contract: Mapping[str, str]
    """The job contract, with the run's trace context: what the jobs it starts should get."""
    job_id: str
    """The runner's id of the plan job (AWS_BATCH_JOB_ID), or ""."""
    joblog: JobLog


AfterPlan = Callable[[Planned], None]
"""What a runner's plan job does once the plan is stored: AWS Batch's submits the render and
encode jobs (runners/batch.py plan_hook). Attached by the entry point, so this module imports no
runner."""


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
    after_plan: AfterPlan | None = None
    """What the plan job's runner does once it has planned (None: nothing). Not a variable:
    the entry point attaches it (`framefarm job`: the runner whose container this is)."""
    runner_id: str = ""
    """The runner's own id of this job when it is not AWS Batch's (a Temporal activity's
    workflow/activity id): recorded in the job log. Set by the runner, not by a variable."""
    frame_timeout: float = config.DEFAULT_FRAME_TIMEOUT
    """Seconds one frame may take (FRAMEFARM_FRAME_TIMEOUT; 0: no limit)."""
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

        def decimal(name: str, most: float, what: str) -> float:
            text = get(name)
            try:
                value = float(text) if text else 0.0
            except ValueError:
                value = -1.0
            if not 0 <= value <= most:
                raise UserError(f"{name}={text!r} is not {what}")
            return value

        def seconds(name: str) -> float:
            return decimal(name, float("inf"), "a number of seconds: set it to e.g. 20")

        def percent(name: str) -> float:
            return decimal(name, 100, "a percentage: set it to 0 to 100, e.g. 2")

        job_type = get(config.JOB_TYPE)
        if job_type not in ("plan", "render", "encode"):
            shown = repr(job_type) if job_type else "not set"
            raise UserError(f"{config.JOB_TYPE} is {shown}: set it to plan, render or encode")
        index = number(config.ARRAY_INDEX)
        if index is not None and index < 0:
            raise UserError(f"{config.ARRAY_INDEX}={index} is below 0: chunks count from 0")
        listed = get(config.CHUNKS)
        if job_type == "render" and listed:
            index = _listed_chunk(listed, index)
        frame_timeout = seconds(config.FRAME_TIMEOUT) if get(config.FRAME_TIMEOUT) \
            else config.DEFAULT_FRAME_TIMEOUT
        run_id = get(config.RUN_ID)
        if run_id:
            check_run_id(run_id)
        if get(config.OUTPUT):
            check_output_name(get(config.OUTPUT))
        if job_type in ("render", "encode") and not run_id:
            raise UserError(f"{config.RUN_ID} is not set: {job_type} jobs need the run id of the plan")
        if job_type == "plan" and not get(config.SKETCH):
            raise UserError(f"{config.SKETCH} is not set: point it at the sketch (a .py file, "
                            "module:function or storage URL)")
        plan = None
        if job_type == "plan":
            plan = PlanRequest(
                sketch=get(config.SKETCH), run_id=run_id or None, kind=get(config.KIND) or None,
                assets=tuple(parse_assets(get(config.ASSETS))),
                total_frames=number(config.TOTAL_FRAMES),
                frames_per_job=None if get(config.FRAMES_PER_RENDER_JOB).lower() == "auto"
                else number(config.FRAMES_PER_RENDER_JOB),
                width=number(config.WIDTH), height=number(config.HEIGHT),
                fps=get(config.FPS) or None, crf=number(config.CRF),
                preset=get(config.PRESET) or None, output=get(config.OUTPUT),
                keep_frames=get(config.KEEP_FRAMES).lower() in ("1", "true", "yes"),
                parallelism=number(config.PARALLELISM) or 0,
                start_cost=seconds(config.JOB_START_SECONDS),
                max_chunks=number(config.MAX_CHUNKS) or 0,
                size_budget=percent(config.SIZE_BUDGET))
        return cls(
            job_type=job_type,  # type: ignore[arg-type]
            storage=get(config.STORAGE) or config.default_storage_url(),
            joblog=get(config.JOBLOG) or config.default_joblog_url(),
            run_id=run_id, index=index, output=get(config.OUTPUT),
            batch_job_id=get(config.BATCH_JOB_ID), attempt=number(config.BATCH_JOB_ATTEMPT),
            cpus=number(config.JOB_CPUS) or 0, plan=plan, frame_timeout=frame_timeout,
            contract={k: env[k] for k in config.CONTRACT if env.get(k)})


def _listed_chunk(listed: str, position: int | None) -> int:
    """The chunk a render job of a resumed run (or of one slice of a run) renders: the
    `position`-th of FRAMEFARM_CHUNKS, whose parts are indexes or FIRST-LAST ranges."""
    spans: list[tuple[int, int]] = []
    for part in (p.strip() for p in listed.split(",")):
        if not part:
            continue
        low, dash, high = part.partition("-")
        try:
            span = (int(low), int(high) if dash else int(low))
        except ValueError:
            span = (0, -1)
        if not 0 <= span[0] <= span[1]:
            raise UserError(f"{config.CHUNKS}={listed!r} is not a list of chunk indexes: use e.g. "
                            "3,7,12 or 0-9999") from None
        spans.append(span)
    count = sum(last - first + 1 for first, last in spans)
    if position is None and count == 1:
        return spans[0][0]
    if position is None or not 0 <= position < count:
        raise UserError(f"{config.ARRAY_INDEX}={position} does not name one of the "
                        f"{count} chunks in {config.CHUNKS}")
    for first, last in spans:
        if position <= last - first:
            return first + position
        position -= last - first + 1
    raise AssertionError("unreachable: position was checked against the count")


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
                              attempt=recorded_attempt(
                                  joblog, run_id=run_id, kind=env.job_type, index=env.index,
                                  attempt=env.attempt,
                                  job_id="" if env.runner_id else env.batch_job_id),
                              host=host, runner_id=env.runner_id or env.batch_job_id,
                              trace_id=trace_id)
    span.set_attributes({"framefarm.job": record.job, "framefarm.attempt": record.attempt})
    if record.index is not None:
        span.set_attribute("framefarm.chunk", record.index)

    def plan() -> _Done:
        assert env.plan is not None
        storage.probe()  # storage that cannot be written fails here, before any chunk renders
        # Listed by `framefarm runs` even when planning fails. The run's record is changed in
        # place (update_run), never put back from an earlier read: the command that submitted
        # this job may be recording its id in it meanwhile.
        first = RunRecord(run_id=run_id, created_at=record.started_at, output=env.plan.output)
        joblog.update_run(run_id, lambda run: first if run is None else None)
        made = run_plan(replace(env.plan, run_id=run_id), storage=storage)
        before = joblog.update_run(run_id, lambda run: replace(
            run or first, created_at=(run or first).created_at or record.started_at,
            plan=made.to_dict(), output=made.output,
            settings={**(run or first).settings, config.STORAGE: storage.url})) or first
        if env.after_plan is not None:
            env.after_plan(Planned(run_id=run_id, plan=made, before=before,
                                   contract={**tracing.context_env(), **env.contract},
                                   job_id=env.batch_job_id, joblog=joblog))
        return _Done({"size": made.size, "total_frames": made.total_frames,
                      "frames_per_job": made.frames_per_job, "output": made.output,
                      "width": made.video.width, "height": made.video.height,
                      "fps": made.video.fps}, [plan_key(run_id)], made.total_frames)

    def render() -> _Done:
        assert env.index is not None

        def chunk_known(chunk: Chunk) -> None:
            watch.chunk = chunk
            span.set_attribute("framefarm.frame_start", chunk.start)

        rendered = run_render(RenderRequest(run_id=run_id, index=env.index, cpus=env.cpus),
                              storage=storage, on_frame=watch.frame_done, on_chunk=chunk_known)
        return _Done(asdict(rendered), [rendered.segment], rendered.frames,
                     {"sha256": rendered.sha256, "bytes": rendered.bytes,
                      "plan_hash": rendered.plan_hash})

    def encode() -> _Done:
        expected = expected_segments(joblog.jobs(run_id))
        encoded = run_encode(EncodeRequest(run_id=run_id, output=env.output, expected=expected),
                             storage=storage)
        joblog.update_run(run_id, lambda run: replace(run, output=encoded.output) if run else None)
        return _Done(asdict(encoded), [encoded.key, encoded.output], encoded.frames)

    step = {"plan": plan, "render": render, "encode": encode}[env.job_type]
    watch = JobWatch(joblog, record, frame_timeout=env.frame_timeout if env.job_type == "render"
                     else 0.0, forward=on_frame)
    try:
        with watch:
            done = step()
    except BaseException as exc:
        tracing.fail(span, exc, describe_error(exc)[0].splitlines()[-1])
        outcome = _failed(joblog, record, exc, watch)
        if not isinstance(exc, Exception):
            raise  # KeyboardInterrupt, SystemExit: recorded, then let through
        return outcome
    current = joblog.get_job(run_id, record.job, record.attempt) or record
    try:
        joblog.update_job(current, status="SUCCEEDED", frames=done.frames, outputs=done.outputs,
                          **done.record)
    except StatusConflict:  # another process closed this attempt meanwhile (cancel, resume)
        final = joblog.get_job(run_id, record.job, record.attempt)
        text = (f"{record.job} attempt {record.attempt} finished, but was recorded "
                f"{final.status if final else 'missing'} by another process meanwhile")
        return JobOutcome(job=record.job, run_id=run_id, succeeded=False, index=record.index,
                          exit_code=1, error=text)
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
    record: Mapping[str, Any] = field(default_factory=dict)
    """More fields for the job's record (a segment's hash and size)."""


def describe_error(exc: BaseException) -> tuple[str, int]:
    """The text the user sees for a failed job, and the exit code."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", 130
    if isinstance(exc, SystemExit):
        return f"sys.exit({exc.code!r}) was called", 1
    if isinstance(exc, TransientError):
        return str(exc), exc.exit_code
    if isinstance(exc, SketchError):
        return exc.full_text(), exc.exit_code
    if isinstance(exc, UserError):
        return str(exc), exc.exit_code
    exit_code = exc.exit_code if isinstance(exc, FramefarmError) else 1
    return "".join(traceback.format_exception(exc)).rstrip(), exit_code


def _failed(joblog: JobLog, record: JobRecord, exc: BaseException,
            watch: JobWatch | None = None) -> JobOutcome:
    text, exit_code = describe_error(exc)
    chunk = watch.chunk if watch is not None else None
    if chunk is not None and watch is not None and not text.startswith("chunk "):
        # A sketch error names its frame; anything else is told the frame it stopped at.
        at = "" if isinstance(exc, SketchError) else \
            f", at frame {min(chunk.start + watch.done, chunk.stop - 1)}"
        text = f"{describe_chunk(chunk)}{at}: {text}"
    status = "CANCELLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
    with contextlib.suppress(StatusConflict):  # the runner recorded it first (a frame timeout)
        current = joblog.get_job(record.run_id, record.job, record.attempt) or record
        joblog.update_job(current, status=status, error=text, exit_code=exit_code)
    return JobOutcome(job=record.job, run_id=record.run_id, succeeded=False, index=record.index,
                      exit_code=exit_code, error=text)


class JobWatch:
    """A thread beside a running job: it writes the frames done (at most every
    PROGRESS_INTERVAL seconds) and a heartbeat (every HEARTBEAT_SECONDS) to the job log, and
    ends the job when one frame takes longer than `frame_timeout`.

    The render loop only counts frames: a job-log write that waits for a busy database, or
    fails, never holds up or fails the job. A frame out of time is recorded FAILED, naming it,
    and the process exits (code FRAME_TIMEOUT_EXIT), since a frame stuck in native code cannot
    be interrupted: the runner retries the chunk in a fresh process, as after a crash.
    """

    def __init__(self, joblog: JobLog, record: JobRecord, *, frame_timeout: float = 0.0,
                 forward: Callable[[int], None] | None = None) -> None:
        self._joblog = joblog
        self._record = record
        self._timeout = frame_timeout
        self._forward = forward
        self.chunk: Chunk | None = None
        self.done = 0
        self._frame_began = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def frame_done(self, done: int) -> None:
        """The render loop finished its `done`-th frame."""
        self.done = done
        self._frame_began = time.monotonic()
        if self._forward is not None:
            self._forward(done)

    def __enter__(self) -> JobWatch:
        self._frame_began = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True, name="framefarm-job-watch")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        written, last_write = 0, time.monotonic()
        tick = min(PROGRESS_INTERVAL, self._timeout / 4) if self._timeout else PROGRESS_INTERVAL
        try:
            while not self._stop.wait(tick):
                now = time.monotonic()
                if self._timeout and now - self._frame_began > self._timeout and self._rendering():
                    self._expire()
                due = now - last_write >= HEARTBEAT_SECONDS
                if due or (self.done != written and now - last_write >= PROGRESS_INTERVAL):
                    written, last_write = self.done, now
                    self._write(frames=written, heartbeat_at=now_iso())
        finally:
            self._joblog.release_thread()

    def _write(self, **changes: Any) -> None:
        with contextlib.suppress(Exception):  # best effort: the job goes on without it
            self._record = self._joblog.update_job(self._record, **changes)

    def _rendering(self) -> bool:
        """Frames are being drawn: the plan is read and frames are left (the encoder's flush and
        the upload after the last one are not a frame's time)."""
        return self.chunk is not None and self.done < len(self.chunk)

    def _expire(self) -> None:
        chunk = self.chunk
        assert chunk is not None
        frame = chunk.start + self.done
        where = f"{describe_chunk(chunk)}: "
        what = f"frame {frame}" + (" (with the sketch's setup)" if self.done == 0 else "")
        text = (f"{where}{what} took longer than the frame timeout of {self._timeout:g} s "
                f"(--frame-timeout, {config.FRAME_TIMEOUT}); the job was stopped")
        self._write(status="FAILED", error=text, frames=self.done, exit_code=FRAME_TIMEOUT_EXIT)
        if say_timeouts:
            print(f"framefarm job: {self._record.job} of run {self._record.run_id} FAILED\n{text}",
                  file=sys.stderr, flush=True)
        os._exit(FRAME_TIMEOUT_EXIT)


def main(environ: Mapping[str, str] | None = None, *,
         plan_hook: Callable[[Mapping[str, str]], AfterPlan | None] | None = None) -> int:
    """`framefarm job`: run one step from the environment; the exit code says how it went.
    `plan_hook(environ)`: what a plan job does once it has planned (runners.plan_hook: the
    runner whose container this is)."""
    try:
        env = JobEnv.from_environ(environ)
        if env.job_type == "plan" and plan_hook is not None:
            env = replace(env, after_plan=plan_hook(os.environ if environ is None else environ))
        _otel.setup(environ)
        outcome = run_job(env)
    except (UserError, TransientError) as exc:  # bad input; storage or job log I/O (exit 1)
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
