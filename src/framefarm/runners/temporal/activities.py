"""The activities: thin wrappers that run one plan, render or encode job through the job
contract (`framefarm.job.run_job`, as every runner does), in a worker's process pool.

Each adds what only Temporal knows to the contract — the job type, the chunk index and the
attempt (Temporal's attempt, so a retried job shows as attempt 2, 3 … in the job log) — and
turns a failed job into an ApplicationError: a user error (a sketch error included) is
non-retryable, anything else is retried. Render jobs heartbeat each finished frame; plan and
encode heartbeat from a thread while they run. Either way a job on a worker that died is given
to another worker within the heartbeat timeout.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, replace

from temporalio import activity
from temporalio.exceptions import ApplicationError

from framefarm import config
from framefarm._procs import die_with
from framefarm.errors import UserError
from framefarm.job import JobEnv, run_job
from framefarm.joblog import JobLog, StatusConflict, open_joblog
from framefarm.model import TERMINAL_STATUSES, JobKind, JobOutcome, job_name
from framefarm.runners.temporal.shared import (
    EncodeOutput,
    JobFailure,
    JobInput,
    PlanOutput,
    RenderOutput,
)
from framefarm.storage import Storage, open_storage

USER_ERROR = "UserError"
"""The ApplicationError type of a job that failed on bad input or a sketch error: the retry
policy lists it as non-retryable."""
JOB_FAILED = "JobFailed"

_process: dict[str, int] = {"cpus": 0}
_backends: dict[tuple[str, str], tuple[Storage, JobLog]] = {}


def start_process(cpus: int, traced: bool, worker_pid: int) -> None:
    """A pool process starts (the pool's initializer): as a local runner's worker, with `cpus`
    CPUs for each job's encoder, ending with its worker."""
    from framefarm.runners.local import _start_worker

    _process["cpus"] = cpus
    die_with(worker_pid)
    _start_worker(traced)


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
    """Render one chunk (a render job), heartbeating the frames done after each frame."""
    activity.heartbeat(0)
    outcome = _run("render", job, on_frame=activity.heartbeat)
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


def _run(kind: JobKind, job: JobInput,
         on_frame: Callable[[int], None] | None = None) -> JobOutcome:
    info = activity.info()
    attempt = job.attempt_base + info.attempt
    env = {**job.env, config.JOB_TYPE: kind, config.BATCH_JOB_ATTEMPT: str(attempt)}
    if job.index is not None:
        env[config.ARRAY_INDEX] = str(job.index)
    if _process["cpus"]:
        env[config.JOB_CPUS] = str(_process["cpus"])
    try:
        contract = replace(JobEnv.from_environ(env),
                           runner_id=f"{info.workflow_id}/{info.activity_id}")
        storage, joblog = _open(env)
        if info.attempt > 1:
            _close_lost_attempt(joblog, contract.run_id, job_name(kind, job.index), attempt - 1)
        outcome = run_job(contract, storage=storage, joblog=joblog, on_frame=on_frame)
    except UserError as exc:
        failure = JobFailure(job=job_name(kind, job.index), index=job.index,
                             exit_code=exc.exit_code, error=str(exc))
        raise ApplicationError(str(exc), asdict(failure), type=USER_ERROR,
                               non_retryable=True) from None
    if not outcome.succeeded:
        failure = JobFailure(job=outcome.job, index=outcome.index, exit_code=outcome.exit_code,
                             error=outcome.error)
        user_error = outcome.exit_code == UserError.exit_code
        head = outcome.error.splitlines()[0] if outcome.error else f"{outcome.job} failed"
        raise ApplicationError(head, asdict(failure), type=USER_ERROR if user_error else JOB_FAILED,
                               non_retryable=user_error)
    return outcome


def _open(env: Mapping[str, str]) -> tuple[Storage, JobLog]:
    """Storage and job log for this process, opened once and reused by every job it runs."""
    key = (env[config.STORAGE], env[config.JOBLOG])
    if key not in _backends:
        _backends[key] = (open_storage(key[0]), open_joblog(key[1]))
    return _backends[key]


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
