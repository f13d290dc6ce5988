"""`framefarm render --runner temporal`: start the run's workflow (the run id is its workflow id,
so starting the same run again attaches to it), follow it through the progress query, and
report how it ended — with a dev server and a worker of its own when no server is given."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.runtime import Runtime

from framefarm import config
from framefarm.joblog import open_joblog
from framefarm.model import JobOutcome
from framefarm.runners._base import Progress, ProgressCallback, Runner, RunRequest, RunResult
from framefarm.runners.local import default_workers
from framefarm.runners.temporal.connect import (
    TemporalTarget,
    connect,
    resolve_target,
    run_with_runtime,
    ui_url,
)
from framefarm.runners.temporal.devserver import DevServer
from framefarm.runners.temporal.shared import (
    CHUNKS_PER_WORKFLOW,
    DEFAULT_HEARTBEAT_SECONDS,
    PROGRESS_QUERY,
    RunInput,
    RunOutput,
    RunProgress,
)
from framefarm.runners.temporal.worker import JobPool, WorkerSettings, running_worker
from framefarm.runners.temporal.workflows import RenderRun
from framefarm.steps import new_run_id
from framefarm.steps._keys import output_key
from framefarm.steps.plan import store_sketch_file
from framefarm.storage import open_storage

POLL_SECONDS = 0.5
QUERY_TIMEOUT = timedelta(seconds=5)
NO_WORKER_HINT_SECONDS = 15.0
"""How long a run may wait for its first worker before the user is told how to start one."""


class TemporalRunner(Runner):
    """Runs the steps as a Temporal workflow, on whichever workers poll the task queue."""

    name = "temporal"
    start_cost_seconds = 0.05
    """An activity reaches an idle worker's warm process in tens of milliseconds."""

    def __init__(self, *, workers: int | None = None, address: str | None = None,
                 namespace: str | None = None, task_queue: str | None = None,
                 ui: str | None = None, heartbeat_seconds: float | None = None,
                 chunks_per_workflow: int = CHUNKS_PER_WORKFLOW,
                 announce: Callable[[str], None] | None = None,
                 data_dir: Path | None = None) -> None:
        self.target = resolve_target(address=address, namespace=namespace, ui=ui)
        self.workers = workers
        self.task_queue = str(config.resolve(task_queue, config.TASK_QUEUE, config.DEFAULT_TASK_QUEUE))
        self.heartbeat_seconds = heartbeat_seconds or DEFAULT_HEARTBEAT_SECONDS
        self.chunks_per_workflow = chunks_per_workflow
        self.announce = announce or (lambda line: None)
        self.data_dir = data_dir

    @property
    def own_server(self) -> bool:
        """True when no server was given: this runner starts a dev server and a worker."""
        return not self.target.address

    def run(self, request: RunRequest, *, on_progress: ProgressCallback | None = None) -> RunResult:
        """Start (or attach to) the run's workflow and wait for it to end."""
        env = dict(request.env)
        run_id = env.setdefault(config.RUN_ID, new_run_id())
        storage = open_storage(env[config.STORAGE])
        local_output = ""
        if self.own_server:
            processes = self.workers or default_workers()
            env.setdefault(config.PARALLELISM, str(processes))
        else:
            # Workers may be on other machines: the sketch goes to storage, the video comes back.
            sketch = Path(env[config.SKETCH])
            if "://" not in env[config.SKETCH] and sketch.is_file():
                env[config.SKETCH] = store_sketch_file(sketch, storage)
            if "://" not in env.get(config.OUTPUT, "://"):
                local_output = env.pop(config.OUTPUT)
            if self.workers:
                env.setdefault(config.PARALLELISM, str(self.workers))
        env.setdefault(config.JOB_START_SECONDS, str(self.start_cost_seconds))
        joblog = open_joblog(env[config.JOBLOG])
        # A failed run started again continues its jobs' attempt numbers.
        attempt_base = max((r.attempt for r in joblog.jobs(run_id)), default=0)
        request_in = RunInput(env=env, attempt_base=attempt_base,
                              heartbeat_seconds=self.heartbeat_seconds,
                              chunks_per_workflow=self.chunks_per_workflow)
        try:
            result = run_with_runtime(lambda runtime: self._run(request_in, run_id, on_progress,
                                                                runtime))
        except KeyboardInterrupt:
            again = f"the same command with --run-id {run_id}"
            self.announce(f"run {run_id} stays in this folder's Temporal history: {again} picks "
                          "it up where it stopped" if self.own_server else
                          f"run {run_id} goes on in Temporal without this command: {again} "
                          "follows it again")
            raise
        if result.succeeded and local_output:
            storage.get_file(output_key(run_id), Path(local_output))
        return result

    async def _run(self, request: RunInput, run_id: str, on_progress: ProgressCallback | None,
                   runtime: Runtime) -> RunResult:
        async with AsyncExitStack() as stack:
            target, pool = self.target, None
            if self.own_server:
                server = DevServer(self.data_dir or config.default_data_dir())
                stack.callback(server.stop)
                server.launch()
                # The job processes' forkserver imports framefarm while the server starts.
                pool = stack.enter_context(JobPool(self.workers or default_workers()))
                server.wait_ready()
                target = TemporalTarget(address=server.address, namespace=target.namespace,
                                        ui=server.ui)
            # The tracing interceptor makes the start a span of the run and carries its context
            # to the workflow in Temporal headers; queries go through a plain client.
            client = await connect(target, runtime=runtime, interceptors=[TracingInterceptor()])
            plain = Client(client.service_client, namespace=target.namespace)
            if pool is not None:
                # (Ctrl-C reaches its jobs too: nothing to wait for when it stops.)
                settings = WorkerSettings(task_queue=self.task_queue, processes=pool.processes,
                                          graceful_seconds=0)
                await stack.enter_async_context(running_worker(plain, settings, pool))
            handle, attached = await self._start(client, request, run_id)
            where = ui_url(target, run_id)
            self.announce(f"run {run_id} {'was already' if attached else 'started'} on Temporal "
                          f"(task queue {self.task_queue!r}), see {where}")
            result = await self._follow(plain, handle, run_id, attached=attached, ui=where,
                                        on_progress=on_progress)
        return result

    async def _start(self, client: Client, request: RunInput,
                     run_id: str) -> tuple[WorkflowHandle[Any, RunOutput], bool]:
        """Start the workflow, or attach to the one with this id that runs or succeeded."""
        try:
            handle = await client.start_workflow(
                RenderRun.run, request, id=run_id, task_queue=self.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY)
        except WorkflowAlreadyStartedError:  # it succeeded before: its result is the answer
            return client.get_workflow_handle_for(RenderRun.run, run_id), True
        # The server says whether this call started the workflow or found it running.
        response = getattr(handle, "_start_workflow_response", None)
        return handle, not getattr(response, "started", True)

    async def _follow(self, client: Client, handle: WorkflowHandle[Any, RunOutput], run_id: str,
                      *, attached: bool, ui: str, on_progress: ProgressCallback | None) -> RunResult:
        """Wait for the result, reporting progress from the workflow's query meanwhile."""
        details = {"attached": attached, "temporal_ui": ui}
        waiting = asyncio.ensure_future(handle.result())
        began = time.monotonic()
        hinted = False
        while not waiting.done():
            await asyncio.wait({waiting}, timeout=POLL_SECONDS)
            if waiting.done() or on_progress is None:
                continue
            progress = await query_progress(client, run_id)
            if progress is not None and progress.total_frames:
                on_progress(Progress(run_id=run_id, total_frames=progress.total_frames,
                                     frames_done=progress.frames_done, chunks=progress.chunks,
                                     chunks_done=progress.chunks_done,
                                     elapsed=time.monotonic() - began))
            elif (progress is None or progress.phase == "plan") and not hinted \
                    and not self.own_server and time.monotonic() - began > NO_WORKER_HINT_SECONDS:
                hinted = True
                self.announce(f"run {run_id} waits for a worker: start one with `framefarm worker "
                              f"--temporal-address {self.target.address} --task-queue "
                              f"{self.task_queue}`")
        try:
            done = waiting.result()
        except WorkflowFailureError as err:
            return _failed(run_id, err, details)
        if on_progress is not None:
            on_progress(Progress(run_id=run_id, total_frames=done.plan.total_frames,
                                 frames_done=done.plan.total_frames, chunks=done.plan.chunks,
                                 chunks_done=done.plan.chunks, elapsed=time.monotonic() - began))
        plan = JobOutcome(job="plan", run_id=run_id, succeeded=True, result=asdict(done.plan))
        encode = JobOutcome(job="encode", run_id=run_id, succeeded=True, result=asdict(done.encode))
        return RunResult(run_id=run_id, succeeded=True, plan=plan, encode=encode, details=details)


async def query_progress(client: Client, workflow_id: str) -> RunProgress | None:
    """The run's progress: its workflow's, plus that of the child workflows still running (and
    theirs); None when no worker answers (yet)."""
    try:
        progress: RunProgress = await client.get_workflow_handle(workflow_id).query(
            PROGRESS_QUERY, result_type=RunProgress, rpc_timeout=QUERY_TIMEOUT)
    except Exception:  # no worker has answered yet, or the query timed out: try next time
        return None
    for child in progress.children:
        share = await query_progress(client, child)
        if share is not None:
            progress.chunks_done += share.chunks_done
            progress.frames_done += share.frames_done
    return progress


def _failed(run_id: str, err: WorkflowFailureError, details: Mapping[str, Any]) -> RunResult:
    """A failed run as a RunResult: the failed jobs the workflow reported, as the local runner
    would report them."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.details and isinstance(cause.details[0], list):
        failures = tuple(JobOutcome(job=f["job"], run_id=run_id, succeeded=False,
                                    index=f.get("index"), exit_code=int(f.get("exit_code", 1)),
                                    error=f.get("error", "")) for f in cause.details[0])
    else:  # terminated, cancelled, timed out, or a bug: what Temporal says
        failures = (JobOutcome(job="workflow", run_id=run_id, succeeded=False, exit_code=1,
                               error=f"the run's workflow failed: {cause or err}"),)
    plan = next((f for f in failures if f.job == "plan"), None)
    return RunResult(run_id=run_id, succeeded=False, plan=plan, failures=failures, details=details)
