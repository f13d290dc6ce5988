"""The workflows: what runs when. Deterministic — no I/O, no clocks, no randomness — so Temporal
can replay them on any worker.

`FramefarmRun` plans, renders every chunk, then encodes; `FramefarmChunks` renders a range of
chunks for it when a run has more than CHUNKS_PER_WORKFLOW of them, so no history grows past a
few thousand events (see shared.CHUNKS_PER_WORKFLOW). Render failures do not stop the other
chunks: the run fails at the end, naming each failed job as `framefarm job` would.

A resumed run (RunInput.chunks) skips the plan job and renders only its chunks. A cancelled run
cancels its render jobs and waits for them to stop (each records its attempt CANCELLED at its
next frame; one on a dead worker times out), then ends cancelled.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    TimeoutType,
    is_cancelled_exception,
)
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

with workflow.unsafe.imports_passed_through():
    from framefarm.runners.temporal import activities
    from framefarm.runners.temporal.shared import (
        CHUNKS_WORKFLOW,
        MAX_ATTEMPTS,
        MAX_FAILURES_KEPT,
        PLAN_TIMEOUT_SECONDS,
        PLAN_WORKFLOW,
        PROGRESS_QUERY,
        ChunksInput,
        ChunksOutput,
        EncodeOutput,
        JobFailure,
        JobInput,
        PlanOutput,
        RunInput,
        RunOutput,
        RunProgress,
        chunk_frames,
        encode_timeout,
        fan_out_size,
        render_timeout,
    )

RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                    maximum_interval=timedelta(seconds=30), maximum_attempts=MAX_ATTEMPTS,
                    non_retryable_error_types=[activities.USER_ERROR])
RUN_FAILED = "RunFailed"
"""The ApplicationError type a failed run ends with; its one detail is the failed jobs."""


@workflow.defn(name=PLAN_WORKFLOW)
class RenderRun:
    """One run: plan, render every chunk (through child workflows when there are many), encode."""

    def __init__(self) -> None:
        self._progress = RunProgress()

    @workflow.run
    async def run(self, request: RunInput) -> RunOutput:
        """Run the three steps; fail with the failed jobs' errors as the one detail."""
        beat = timedelta(seconds=request.heartbeat_seconds)
        job = JobInput(env=request.env, attempt_base=request.attempt_base)
        plan: PlanOutput
        if request.chunks is not None and request.plan is not None:
            plan = request.plan  # a resumed run: planned before, some chunks done
            chunks = ChunksInput(run=request, start=0, stop=len(request.chunks),
                                 frames_per_job=plan.frames_per_job, indexes=request.chunks)
            self._progress.chunks_done = plan.chunks - len(request.chunks)
            self._progress.frames_done = plan.total_frames - sum(
                chunk_frames(i, total_frames=plan.total_frames, frames_per_job=plan.frames_per_job)
                for i in request.chunks)
        else:
            try:
                plan = await workflow.execute_activity(
                    activities.plan, job,
                    start_to_close_timeout=timedelta(seconds=PLAN_TIMEOUT_SECONDS),
                    heartbeat_timeout=beat, retry_policy=RETRY)
            except ActivityError as err:
                if is_cancelled_exception(err):
                    raise
                raise run_failed([failure_of(err, "plan")], failed=1) from None
            chunks = ChunksInput(run=request, start=0, stop=plan.chunks,
                                 frames_per_job=plan.frames_per_job)
        self._progress.phase = "render"
        self._progress.total_frames = plan.total_frames
        self._progress.chunks = plan.chunks
        rendered = await render_chunks(chunks, self._progress)
        if rendered.failed:
            raise run_failed(rendered.failures, failed=rendered.failed)
        self._progress.phase = "encode"
        try:
            encoded: EncodeOutput = await workflow.execute_activity(
                activities.encode, job,
                start_to_close_timeout=timedelta(seconds=encode_timeout(plan.chunks)),
                heartbeat_timeout=beat, retry_policy=RETRY)
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            raise run_failed([failure_of(err, "encode")], failed=1) from None
        self._progress.phase = "done"
        return RunOutput(run_id=plan.run_id, plan=plan, encode=encoded)

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> RunProgress:
        """Chunks and frames done so far, and the child workflows rendering the rest."""
        return self._progress


@workflow.defn(name=CHUNKS_WORKFLOW)
class RenderChunks:
    """A share of a big run's chunks, rendered as activities or by child workflows in turn."""

    def __init__(self) -> None:
        self._progress = RunProgress(phase="render")

    @workflow.run
    async def run(self, request: ChunksInput) -> ChunksOutput:
        """Render chunks [start, stop); failures are returned, not raised, so siblings finish."""
        self._progress.chunks = request.stop - request.start
        return await render_chunks(request, self._progress)

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> RunProgress:
        """Chunks and frames done so far, and the child workflows rendering the rest."""
        return self._progress


async def render_chunks(request: ChunksInput, progress: RunProgress) -> ChunksOutput:
    """Render chunks [start, stop): one activity each, or one child workflow per share when the
    range is more than one workflow should hold. Every chunk runs to its end.

    A cancelled workflow raises CancelledError here only once every job has stopped (gather
    with return_exceptions waits for all: without it the first job to end cancelled — one that
    had not started — would end the workflow while the others are still stopping).
    """
    count = request.stop - request.start
    piece = fan_out_size(count, request.run.chunks_per_workflow)
    if piece == 1:
        parts = await asyncio.gather(*(_render_one(request, index, progress)
                                       for index in range(request.start, request.stop)),
                                     return_exceptions=True)
    else:
        parts = await asyncio.gather(*(_render_share(request, start, min(start + piece, request.stop),
                                                     progress)
                                       for start in range(request.start, request.stop, piece)),
                                     return_exceptions=True)
    out = ChunksOutput(chunks_done=progress.chunks_done, frames_done=progress.frames_done)
    for part in parts:
        if isinstance(part, BaseException):
            raise part  # cancelled (or a bug, which fails the workflow task: it is retried)
        out.failed += part.failed
        out.failures.extend(part.failures[:MAX_FAILURES_KEPT - len(out.failures)])
    return out


async def _render_one(request: ChunksInput, position: int, progress: RunProgress) -> ChunksOutput:
    run = request.run
    frames_per_job = request.frames_per_job
    index = position if request.indexes is None else request.indexes[position - request.start]
    try:
        # A cancelled run waits for its render jobs to stop and record it (at their next frame).
        rendered = await workflow.execute_activity(
            activities.render, JobInput(env=run.env, index=index, attempt_base=run.attempt_base),
            start_to_close_timeout=timedelta(seconds=render_timeout(frames_per_job,
                                                                    run.heartbeat_seconds)),
            heartbeat_timeout=timedelta(seconds=run.heartbeat_seconds), retry_policy=RETRY,
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED)
    except ActivityError as err:
        if is_cancelled_exception(err):
            raise
        return ChunksOutput(failed=1, failures=[failure_of(err, f"render:{index}", index)])
    progress.chunks_done += 1
    progress.frames_done += rendered.frames
    return ChunksOutput(chunks_done=1, frames_done=rendered.frames)


async def _render_share(request: ChunksInput, start: int, stop: int,
                        progress: RunProgress) -> ChunksOutput:
    child_id = f"{workflow.info().workflow_id}/chunks-{start}-{stop}"
    progress.children.append(child_id)
    # A resumed run's child gets its own share of the chunk list, not the whole of it.
    indexes = None if request.indexes is None else \
        request.indexes[start - request.start:stop - request.start]
    run = request.run if request.run.chunks is None else \
        dataclasses.replace(request.run, chunks=None, plan=None)
    try:
        done: ChunksOutput = await workflow.execute_child_workflow(
            RenderChunks.run, ChunksInput(run=run, start=start, stop=stop,
                                          frames_per_job=request.frames_per_job,
                                          indexes=indexes), id=child_id)
    except ChildWorkflowError as err:
        if is_cancelled_exception(err):
            raise
        failure = JobFailure(job=f"render:{start}-{stop - 1}", index=start,
                             error=f"child workflow {child_id} failed: {err.cause or err}")
        return ChunksOutput(failed=stop - start, failures=[failure])
    finally:
        progress.children.remove(child_id)
    progress.chunks_done += done.chunks_done
    progress.frames_done += done.frames_done
    return done


def failure_of(err: ActivityError, job: str, index: int | None = None) -> JobFailure:
    """The failed job an activity error stands for: the job's own report when the activity
    raised one, else what Temporal says (a timeout, a lost worker)."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.details and isinstance(cause.details[0], dict):
        return JobFailure(**cause.details[0])
    why = str(cause or err)
    if isinstance(cause, TemporalTimeoutError) and cause.type == TimeoutType.HEARTBEAT:
        why = ("no heartbeat within the heartbeat timeout: its worker died, or a frame (the first "
               "one with the sketch's setup) took longer; raise --heartbeat-timeout if frames are slow")
    elif isinstance(cause, TemporalTimeoutError):
        why = f"timed out ({cause.type.name if cause.type else 'timeout'})"
    return JobFailure(job=job, index=index, error=f"{job} failed after {MAX_ATTEMPTS} attempts: {why}")


def run_failed(failures: list[JobFailure], *, failed: int) -> ApplicationError:
    """The error a run fails with: one line, the failed jobs as its detail."""
    first = failures[0] if failures else JobFailure(job="?")
    head = first.error.splitlines()[0] if first.error else f"{first.job} failed"
    message = f"{failed} job(s) failed; {first.job}: {head}"
    return ApplicationError(message, [vars(f) for f in failures], type=RUN_FAILED,
                            non_retryable=True)
