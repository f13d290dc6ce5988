"""Stopping a Temporal run and starting it again: `framefarm cancel` from any shell, Ctrl-C or
SIGTERM on the command that follows it, and what the job log keeps of an earlier workflow."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta

from temporalio.client import WorkflowExecutionStatus
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from framefarm import tracing
from framefarm.joblog import JobLog
from framefarm.lifecycle import close_open_attempts
from framefarm.runners.temporal.connect import TemporalTarget, connect

CANCEL_WAIT_SECONDS = 15.0
"""How long `framefarm cancel` waits for the workflow to end (its jobs stop at their next frame)."""
QUERY_TIMEOUT = 5.0
LOST_BEFORE = ("lost: the run's earlier workflow ended without recording this attempt (its "
               "command was killed, or the workflow was terminated); the run was started again")


async def cancel_workflow(target: TemporalTarget, run_id: str, runtime: Runtime, *,
                          gone: Callable[[], bool]) -> str:
    """Cancel the run's workflow on `target` and wait (up to CANCEL_WAIT_SECONDS) for it to end,
    or for the server to be `gone`; what happened, in a few words."""
    client = await connect(target, runtime=runtime)
    handle = client.get_workflow_handle(run_id)
    try:
        described = await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return f"Temporal at {target.address} has no workflow {run_id}"
        raise
    if described.status != WorkflowExecutionStatus.RUNNING:
        ended = described.status.name if described.status else "?"
        return f"its workflow had already ended ({ended})"
    await handle.cancel(reason="`framefarm cancel`")
    deadline = time.monotonic() + CANCEL_WAIT_SECONDS
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        if gone():
            break
        try:
            described = await handle.describe(rpc_timeout=timedelta(seconds=QUERY_TIMEOUT))
        except RPCError:  # an own dev server stops with its render command
            break
        if described.status != WorkflowExecutionStatus.RUNNING:
            break
    else:
        return f"asked Temporal at {target.address} to cancel its workflow; it is still stopping"
    return f"cancelled its workflow on Temporal at {target.address}"


def attempt_base(joblog: JobLog, run_id: str) -> int:
    """Attempts the run's jobs made before: a run started again continues their numbers."""
    return max((r.attempt for r in joblog.jobs(run_id)), default=0)


def cancelled_at(joblog: JobLog, run_id: str) -> str:
    try:
        with tracing.untraced():  # polling is waiting, not work: no spans
            run = joblog.get_run(run_id)
    except Exception:  # a busy job log: ask again next time
        return ""
    return run.cancelled_at if run else ""


def started_again(joblog: JobLog, run_id: str) -> None:
    """A new workflow of the run started: a cancellation of an earlier one no longer holds, and
    attempts that one left open are lost."""
    run = joblog.get_run(run_id)
    if run is not None and run.cancelled_at:
        joblog.put_run(replace(run, cancelled_at=""))
    close_open_attempts(joblog, run_id, status="FAILED", error=LOST_BEFORE)


@contextlib.contextmanager
def stop_on_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set `stop` while the block runs (a second one changes nothing: the
    stop is under way); off the main thread they are left alone."""
    kept = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)
        try:
            loop.add_signal_handler(signum, stop.set)
        except (ValueError, RuntimeError):  # not the main thread
            continue
        kept[signum] = previous
    try:
        yield
    finally:
        for signum, handler in kept.items():
            loop.remove_signal_handler(signum)
            signal.signal(signum, handler)
