"""A worker: runs the workflows in its own process and the activities — the CPU-bound plan,
render and encode jobs — in a pool of processes, one job per process at a time.

`framefarm worker` runs one until it is stopped (Ctrl-C or SIGTERM); `framefarm render --runner
temporal` without an address runs one inside itself for the length of the run. Any number of
workers on any number of machines can serve the same task queue; they must share the run's
storage and job log (S3 and DynamoDB, or one machine's files).

A job process that dies (a frame out of time, `sys.exit` in a sketch, a crash) costs only its
own job, which Temporal retries; a fresh process takes its place and the worker goes on serving
(see _processes.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.managers import SyncManager
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.exceptions import CancelledError
from temporalio.runtime import Runtime
from temporalio.worker import SharedStateManager, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from framefarm import _otel, config
from framefarm._procs import die_with
from framefarm.errors import UserError
from framefarm.runners.local import default_workers
from framefarm.runners.temporal import _processes, activities
from framefarm.runners.temporal._processes import JobProcesses
from framefarm.runners.temporal._spans import RunSpans, RunSpansInterceptor
from framefarm.runners.temporal.connect import TemporalTarget, connect, run_with_runtime
from framefarm.runners.temporal.shared import MAX_ATTEMPTS
from framefarm.runners.temporal.workflows import RenderChunks, RenderRun

GRACEFUL_SECONDS = 30.0
HEARTBEAT_THROTTLE = timedelta(seconds=1)
"""How often at most a job's heartbeats reach Temporal, whose answer says whether the job was
cancelled: a cancelled run's jobs stop within about this long (Temporal's default is 80% of the
heartbeat timeout, 24 s)."""
_PRELOAD = ["framefarm.job", "framefarm.runners.temporal.activities",
            "framefarm.runners.temporal._processes", "numpy", "av", "PIL.Image"]
"""Imported once by the forkserver, so each pool process starts with them loaded."""


@dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    """Where a worker polls and how many jobs it runs at once."""

    task_queue: str = config.DEFAULT_TASK_QUEUE
    processes: int = 0
    """Pool processes, one job each (0: one per CPU)."""
    identity: str = ""
    """How Temporal names this worker (default: pid@host)."""
    graceful_seconds: float = GRACEFUL_SECONDS
    """How long a stopping worker waits for its jobs in hand to finish and be reported."""


class JobPool:
    """The processes that run the jobs, and the manager that carries their heartbeats."""

    def __init__(self, processes: int = 0, *, shielded: bool = False,
                 announce: Callable[[str], None] | None = None) -> None:
        """`shielded`: the processes ignore SIGINT and SIGTERM, so a worker told to stop (by
        Ctrl-C, or a service manager signalling its whole group) finishes the jobs in hand.
        `announce` tells of a job whose process died (Temporal retries it)."""
        self.processes = processes or default_workers()
        self._announce = announce or (lambda line: None)
        # Each process gets an equal share of the CPUs for x264, as the local runner's workers.
        cpus = max(1, default_workers() // self.processes)
        # The worker's threads (Temporal's core runs in them) must not be forked: processes
        # come from a forkserver that imported framefarm, NumPy and PyAV once. It starts now,
        # with the manager.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_PRELOAD)
        # Ignored signals stay ignored in the forkserver and so in every process it forks.
        stops = (signal.SIGINT, signal.SIGTERM)
        kept = {signum: signal.signal(signum, signal.SIG_IGN) for signum in stops} if shielded else {}
        try:
            self.manager = SyncManager(ctx=context)
            self.manager.start(die_with, (os.getpid(),))
            # Each job its own process (started now, not with the first jobs): one that dies
            # costs only its job, where a ProcessPoolExecutor would break for every job.
            self.executor = JobProcesses(self.processes, context=context, on_death=self._lost,
                                         initializer=activities.start_process,
                                         initargs=(cpus, _otel.active(), os.getpid()))
        finally:
            for signum, handler in kept.items():
                signal.signal(signum, handler)

    def _lost(self, args: tuple[object, ...], **how: Any) -> BaseException:
        error = activities.lost_job(args, **how)
        if how.get("killed") != "":
            info = _processes.find(args, activity.Info)
            attempt = info.attempt if info is not None else MAX_ATTEMPTS
            self._announce(f"{error.message}; " + (
                f"Temporal retries it (attempt {attempt + 1} of {MAX_ATTEMPTS})"
                if attempt < MAX_ATTEMPTS else f"it failed {MAX_ATTEMPTS} times"))
        return error

    def kill(self, why: str = "") -> None:
        """Kill the job processes now: their jobs fail at once, not at their heartbeat timeout,
        and Temporal gives them to other workers. `why` is recorded as their attempts' error
        (none: the caller records them)."""
        self.executor.kill(why)

    def close(self) -> None:
        """Stop the processes (once their jobs in hand end; queued ones are dropped) and the
        manager."""
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.manager.shutdown()

    def __enter__(self) -> JobPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _QuietCancellations(logging.Filter):
    """Drops the SDK's "Completing activity as failed" traceback of a job that stopped because
    Temporal cancelled it (its workflow was cancelled or terminated): the job log says so, and
    it is no failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, CancelledError)


_quiet = _QuietCancellations()


@asynccontextmanager
async def running_worker(client: Client, settings: WorkerSettings,
                         pool: JobPool | None = None) -> AsyncIterator[Worker]:
    """A worker polling `settings.task_queue` while the block runs, its jobs in `pool` (made
    here when not given); its span store, and a pool made here, end with it."""
    with contextlib.ExitStack() as stack:
        if pool is None:
            pool = stack.enter_context(JobPool(settings.processes))
        logging.getLogger("temporalio.activity").addFilter(_quiet)
        stack.callback(logging.getLogger("temporalio.activity").removeFilter, _quiet)
        spans = RunSpans()
        worker = Worker(
            client, task_queue=settings.task_queue, workflows=[RenderRun, RenderChunks],
            activities=[activities.plan, activities.render, activities.encode],
            activity_executor=pool.executor, max_concurrent_activities=pool.processes,
            shared_state_manager=SharedStateManager.create_from_multiprocessing(pool.manager),
            interceptors=[RunSpansInterceptor(spans), TracingInterceptor()],
            # framefarm's modules are imported once, outside the sandbox: the workflows use
            # only its plain dataclasses, and its import-time set-up must not run per workflow.
            workflow_runner=SandboxedWorkflowRunner(
                restrictions=SandboxRestrictions.default.with_passthrough_modules("framefarm")),
            identity=settings.identity or None,
            max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
            default_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
            graceful_shutdown_timeout=timedelta(seconds=settings.graceful_seconds))
        storing = asyncio.create_task(spans.keep_storing())
        try:
            async with worker:
                yield worker
        finally:
            storing.cancel()
            await asyncio.gather(storing, return_exceptions=True)


async def serve(target: TemporalTarget, settings: WorkerSettings, runtime: Runtime) -> None:
    """Run a worker until SIGINT or SIGTERM, then finish and report the jobs in hand (for up to
    `settings.graceful_seconds`). A second signal kills them, and Temporal gives them to other
    workers at once. The job processes ignore both signals, so a service manager signalling the
    worker's whole process group stops it gracefully too."""
    client = await connect(target, runtime=runtime)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stopping() -> None:
        if not stop.is_set():
            print("framefarm worker: stopping after the jobs in hand (Ctrl-C again stops at once)",
                  file=sys.stderr, flush=True)
            stop.set()
        else:
            print("framefarm worker: stopping now", file=sys.stderr, flush=True)
            pool.kill("stopped: its worker was stopped at once (a second Ctrl-C or SIGTERM); "
                      "Temporal retries it elsewhere")

    def say(line: str) -> None:
        print(f"framefarm worker: {line}", file=sys.stderr, flush=True)

    with JobPool(settings.processes, shielded=True, announce=say) as pool:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping)
        async with running_worker(client, settings, pool):
            print(f"framefarm worker: {pool.processes} process(es) on {socket.gethostname()} "
                  f"polling task queue {settings.task_queue!r} at {target.address} (namespace "
                  f"{target.namespace}); Ctrl-C stops", file=sys.stderr, flush=True)
            await stop.wait()
    print("framefarm worker: stopped", file=sys.stderr)


def main(target: TemporalTarget, settings: WorkerSettings) -> int:
    """`framefarm worker`: serve until stopped; the exit code."""
    if not target.address:
        raise UserError(f"framefarm worker needs a Temporal server: pass --temporal-address "
                        f"HOST:PORT or set {config.TEMPORAL_ADDRESS} (for trying it out, "
                        "`temporal server start-dev` starts one on 127.0.0.1:7233)")
    _otel.setup()
    run_with_runtime(lambda runtime: serve(target, settings, runtime))
    return 0
