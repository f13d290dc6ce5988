"""The activities: thin wrappers that run one plan, render or encode job through the job
contract (`framefarm.job.run_job`, as every runner does), in a worker's process pool.

Each adds what only Temporal knows to the contract — the job type, the chunk index and the
attempt (Temporal's attempt, so a retried job shows as attempt 2, 3 … in the job log) — and
turns a failed job into an ApplicationError: a user error (a sketch error included) is
non-retryable, anything else is retried. Render jobs heartbeat each finished frame; plan and
encode heartbeat from a thread while they run. Either way a job on a worker that died is given
to another worker within the heartbeat timeout.

A render job learns at its next frame that Temporal cancelled it (the heartbeats carry the
news back, within the worker's heartbeat throttle): it records its attempt CANCELLED, naming the
frame, and stops. A job whose process died (its frame timeout, `sys.exit`, a crash) is reported
by `lost_job`, in the worker: the job log's own account when the job gave one, else how the
process ended; Temporal retries it as it retries any crash.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory, CancelledError

from framefarm import config
from framefarm import job as job_module
from framefarm._procs import die_with, how_it_ended, start_forkserver
from framefarm.errors import UserError
from framefarm.integrity import describe_chunk
from framefarm.job import JobEnv, run_job
from framefarm.joblog import JobLog, StatusConflict
from framefarm.model import TERMINAL_STATUSES, JobKind, JobOutcome, job_name
from framefarm.runners._base import process_backends
from framefarm.runners.temporal import _processes
from framefarm.runners.temporal.shared import (
    EncodeOutput,
    JobFailure,
    JobInput,
    PlanOutput,
    RenderOutput,
)
from framefarm.storage import Storage

USER_ERROR = "UserError"
"""The ApplicationError type of a job that failed on bad input or a sketch error: the retry
policy lists it as non-retryable."""
JOB_FAILED = "JobFailed"
JOB_CANCELLED = "JobCancelled"
"""A job that finished after its attempt was recorded CANCELLED (its run stopped first)."""
CANCEL_CHECK_SECONDS = 0.25
"""How often a render job asks whether Temporal cancelled it (a call to the worker's manager)."""
CANCELLED = ("cancelled: the run was stopped (Ctrl-C, SIGTERM, `framefarm cancel`, or its "
             "workflow was cancelled in Temporal)")

_process: dict[str, int] = {"cpus": 0}


def start_process(cpus: int, traced: bool, worker_pid: int) -> None:
    """A pool process starts (the pool's initializer): as a local runner's worker, with `cpus`
    CPUs for each job's encoder, ending with its worker. With more than one, its render jobs
    draw in that many processes, which start from a forkserver of this process's own: it
    starts now, while the process waits for its first job."""
    from framefarm.runners.local import _start_worker

    _process["cpus"] = cpus
    die_with(worker_pid)
    job_module.say_timeouts = False  # the worker reports them (lost_job)
    _start_worker(traced)
    if cpus > 1:
        start_forkserver()


@activity.defn(name="plan")
def plan(job: JobInput) -> PlanOutput:
    """Plan the run (the plan job)."""
    with _alive():
        outcome = _run("plan", job)
    result = outcome.result
    return PlanOutput(run_id=outcome.run_id, chunks=int(result["size"]),
                      total_frames=int(result["total_frames"]),
                      frames_per_job=int(result["frames_per_job"]), output=str(result["output"]),
                      width=int(result["width"]), height=int(result["height"]),
                      fps=str(result["fps"]))


@activity.defn(name="render")
def render(job: JobInput) -> RenderOutput:
    """Render one chunk (a render job), heartbeating the frames done after each frame; a
    cancelled attempt stops at its next frame."""
    activity.heartbeat(0)
    outcome = _run("render", job)
    result = outcome.result
    return RenderOutput(index=int(result["index"]), frames=int(result["frames"]),
                        segment=str(result["segment"]), seconds=float(result["seconds"]))


@activity.defn(name="encode")
def encode(job: JobInput) -> EncodeOutput:
    """Join the segments into the video (the encode job)."""
    with _alive():
        outcome = _run("encode", job)
    result = outcome.result
    return EncodeOutput(output=str(result["output"]), frames=int(result["frames"]),
                        bytes=int(result["bytes"]), seconds=float(result["seconds"]))


def _run(kind: JobKind, job: JobInput) -> JobOutcome:
    info = activity.info()
    attempt = job.attempt_base + info.attempt
    env = {**job.env, config.JOB_TYPE: kind, config.BATCH_JOB_ATTEMPT: str(attempt)}
    if job.index is not None:
        env[config.ARRAY_INDEX] = str(job.index)
    if _process["cpus"]:
        env[config.JOB_CPUS] = str(_process["cpus"])
    frames: _Frames | None = None
    try:
        contract = replace(JobEnv.from_environ(env),
                           runner_id=f"{info.workflow_id}/{info.activity_id}")
        storage, joblog = process_backends(env)
        name = job_name(kind, job.index)
        if info.attempt > 1:
            _close_lost_attempt(joblog, contract.run_id, name, attempt - 1)
        if kind == "render":
            frames = _Frames(joblog, storage, contract.run_id, name, attempt, job.index)
        _processes.job_began(contract.frame_timeout if kind == "render" else 0.0)
        try:
            outcome = run_job(contract, storage=storage, joblog=joblog,
                              on_frame=frames.done if frames else None)
        except StatusConflict:
            # Recorded CANCELLED meanwhile: the run was stopped before this job heard of it (a
            # failure, not a cancellation, as Temporal has not told this worker yet; a
            # cancelled workflow does not retry it).
            record = joblog.get_job(contract.run_id, name, attempt)
            if record is not None and record.status == "CANCELLED":
                raise ApplicationError(f"{name} finished after the run was stopped: not recorded",
                                       type=JOB_CANCELLED,
                                       category=ApplicationErrorCategory.BENIGN) from None
            raise
    except UserError as exc:
        failure = JobFailure(job=job_name(kind, job.index), index=job.index,
                             exit_code=exc.exit_code, error=str(exc))
        raise ApplicationError(str(exc), asdict(failure), type=USER_ERROR,
                               non_retryable=True) from None
    if frames is not None and frames.stopped:
        if frames.shutdown:  # a failure, retried on another worker
            raise ApplicationError(frames.stopped, type=JOB_FAILED,
                                   category=ApplicationErrorCategory.BENIGN)
        raise CancelledError(frames.stopped)  # Temporal records the attempt cancelled
    if not outcome.succeeded:
        failure = JobFailure(job=outcome.job, index=outcome.index, exit_code=outcome.exit_code,
                             error=outcome.error)
        user_error = outcome.exit_code == UserError.exit_code
        head = outcome.error.splitlines()[0] if outcome.error else f"{outcome.job} failed"
        raise ApplicationError(head, asdict(failure), type=USER_ERROR if user_error else JOB_FAILED,
                               non_retryable=user_error)
    return outcome


class _Stopped(Exception):
    """Raised at a frame of a render job that Temporal cancelled: the job ends there."""


class _Frames:
    """A render job's frames: each one is told to Temporal (a heartbeat) and to the job's
    process slot; every CANCEL_CHECK_SECONDS the job asks whether Temporal cancelled it, and if
    so records its attempt (CANCELLED, or FAILED when its worker is shutting down, as the job is
    then retried elsewhere) and stops."""

    def __init__(self, joblog: JobLog, storage: Storage, run_id: str, job: str, attempt: int,
                 index: int | None) -> None:
        self._joblog, self._storage = joblog, storage
        self._run_id, self._job, self._attempt, self._index = run_id, job, attempt, index
        self._checked = time.monotonic()
        self.stopped = ""
        """Why the job stopped early, once it did."""
        self.shutdown = False
        """It stopped because its worker is shutting down (not cancelled: retried elsewhere)."""

    def done(self, count: int) -> None:
        _processes.frame_done(count)
        activity.heartbeat(count)
        now = time.monotonic()
        if now - self._checked < CANCEL_CHECK_SECONDS:
            return
        self._checked = now
        if not activity.is_cancelled():
            return
        where = _where(self._storage, self._run_id, self._index, count)
        self.shutdown = activity.is_worker_shutdown()
        if self.shutdown:
            status, why = "FAILED", "stopped: its worker shut down; Temporal retries it elsewhere"
        else:
            status, why = "CANCELLED", CANCELLED
        self.stopped = f"{where}: {why}"
        record = self._joblog.get_job(self._run_id, self._job, self._attempt)
        if record is not None and record.status not in TERMINAL_STATUSES:
            with contextlib.suppress(StatusConflict):
                self._joblog.update_job(record, status=status, error=self.stopped, frames=count)
        raise _Stopped(self.stopped)


def _where(storage: Storage, run_id: str, index: int | None, frames: int) -> str:
    """`chunk 3 (frames 30-39), at frame 34`: where a render job stopped, from its plan."""
    from framefarm.steps.plan import read_plan

    try:
        chunk = read_plan(run_id, storage).chunk(index if index is not None else 0)
    except Exception:  # no plan to read: say what is known
        return f"render:{index} after {frames} frame(s)"
    return f"{describe_chunk(chunk)}, at frame {min(chunk.start + frames, chunk.stop - 1)}"


def lost_job(args: tuple[Any, ...], *, pid: int, exitcode: int | None, frames: int,
             stuck: bool, killed: str | None) -> ApplicationError:
    """The error of a job whose process ended before answering (`_processes.OnDeath`): the
    account the job recorded (its frame timeout, `sys.exit`), else how its process ended, now
    recorded FAILED. Retryable: Temporal retries it like any crash. Runs in the worker."""
    info: activity.Info | None = _processes.find(args, activity.Info)
    job: JobInput | None = _processes.find(args, JobInput)
    ended = f"its job process, pid {pid}, {how_it_ended(exitcode)}"
    if info is None or job is None:
        return ApplicationError(f"lost: {ended}", type=JOB_FAILED,
                                category=ApplicationErrorCategory.BENIGN)
    name = job_name(info.activity_type, job.index)  # type: ignore[arg-type]
    failure = JobFailure(job=name, index=job.index, error=f"{name} lost: {ended}")
    if killed == "":  # stopped on purpose, by a caller that records it
        failure.error = f"{name} stopped: its worker killed its job process"
    else:
        storage, joblog = process_backends(job.env)
        run_id = job.env.get(config.RUN_ID, "")
        record = joblog.get_job(run_id, name, job.attempt_base + info.attempt)
        if record is not None and record.status == "FAILED" and record.error and not stuck:
            head, _, rest = record.error.partition("\n")  # it said why before it went
            if "frame timeout" not in head:
                head += f" ({ended})"
            failure.error = f"{head}\n{rest}".rstrip()
        else:
            where = _where(storage, run_id, job.index, frames) if job.index is not None else name
            if stuck:
                timeout = float(job.env.get(config.FRAME_TIMEOUT) or config.DEFAULT_FRAME_TIMEOUT)
                failure.error = (f"{where}: the frame took longer than the frame timeout of "
                                 f"{timeout:g} s (--frame-timeout, {config.FRAME_TIMEOUT}) and "
                                 f"its job process, pid {pid}, was killed")
            else:
                failure.error = f"{where}: {killed or 'lost: ' + ended}"
            if record is not None and record.status not in TERMINAL_STATUSES:
                with contextlib.suppress(StatusConflict):
                    joblog.update_job(record, status="FAILED", error=failure.error)
    # Benign: the worker tells of it in a line of its own, and Temporal's traceback of the
    # worker's internals would say nothing more.
    return ApplicationError(failure.error.splitlines()[0], asdict(failure), type=JOB_FAILED,
                            category=ApplicationErrorCategory.BENIGN)


def _close_lost_attempt(joblog: JobLog, run_id: str, job: str, attempt: int) -> None:
    """The attempt before this one ended without a word (its worker died, or it timed out):
    record it as FAILED, so the job log does not show it running forever."""
    record = joblog.get_job(run_id, job, attempt)
    if record is None or record.status in TERMINAL_STATUSES:
        return
    with contextlib.suppress(StatusConflict):  # it finished after all, just now
        joblog.update_job(record, status="FAILED",
                          error=f"attempt {attempt} was lost: its worker stopped heartbeating or "
                                f"it ran out of time; Temporal retried it as attempt {attempt + 1}")


@contextmanager
def _alive() -> Iterator[None]:
    """Heartbeat from a thread while the block runs: a plan or encode job has no frames to
    count, and a worker that dies under one must still be noticed."""
    timeout = activity.info().heartbeat_timeout
    every = max(0.5, timeout.total_seconds() / 4) if timeout else 10.0
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            activity.heartbeat()

    thread = threading.Thread(target=contextvars.copy_context().run, args=(beat,), daemon=True,
                              name="framefarm-heartbeat")
    activity.heartbeat()
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
