"""`framefarm render --runner temporal`: start the run's workflow (the run id is its workflow id,
so starting the same run again attaches to it), follow its progress in the job log, and
report how it ended — with a dev server and a worker of its own when no server is given.

`resume` starts the run's workflow again for the chunks without a verified segment (no plan
job; attempt numbers go on) and `cancel` cancels it, from any shell. Ctrl-C or SIGTERM on a
command that follows a run stops the run, as `framefarm cancel` does: its workflow is cancelled,
its jobs in flight end (an own worker's processes are killed at once, other workers' jobs stop
at their next frame) and are recorded CANCELLED, and the command returns within about a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.exceptions import (
    ApplicationError,
    CancelledError,
    TerminatedError,
    WorkflowAlreadyStartedError,
)
from temporalio.runtime import Runtime

from framefarm import config
from framefarm.errors import UserError
from framefarm.joblog import JobLog, now_iso, open_joblog
from framefarm.lifecycle import close_open_attempts
from framefarm.model import JobOutcome, RunRecord
from framefarm.runners._base import (
    Progress,
    ProgressCallback,
    ResumeRequest,
    Runner,
    RunRequest,
    RunResult,
)
from framefarm.runners._remote import fetch_output, stage_sketch, take_local_output
from framefarm.runners.local import default_workers
from framefarm.runners.temporal._lifecycle import (
    attempt_base,
    cancel_workflow,
    cancelled_at,
    started_again,
    stop_on_signals,
)
from framefarm.runners.temporal.activities import CANCELLED
from framefarm.runners.temporal.connect import (
    TemporalTarget,
    connect,
    resolve_target,
    run_with_runtime,
    ui_url,
)
from framefarm.runners.temporal.devserver import STOP_TIMEOUT, DevServer, running_address
from framefarm.runners.temporal.shared import (
    CHUNKS_PER_WORKFLOW,
    DEFAULT_HEARTBEAT_SECONDS,
    PlanOutput,
    RunInput,
    RunOutput,
)
from framefarm.runners.temporal.worker import JobPool, WorkerSettings, running_worker
from framefarm.runners.temporal.workflows import RenderRun
from framefarm.steps import new_run_id
from framefarm.storage import Storage, open_storage

POLL_SECONDS = 0.5
NO_WORKER_HINT_SECONDS = 15.0
"""How long a run may wait for its first worker before the user is told how to start one."""
CANCEL_CHECK_SECONDS = 1.0
"""How often a following command reads the job log for a `framefarm cancel` of its run."""
STOP_WAIT_SECONDS = 1.0
"""How long a command stopping its run waits for the workflow to end cancelled (a few hundred
ms with its own worker, whose jobs it kills); an own server's workflow still open then is
terminated, as nobody would drive it."""


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

    def _data_dir(self) -> Path:
        return self.data_dir or config.default_data_dir()

    # -- the run's record: what resume and cancel need -------------------------------------------

    def settings(self) -> dict[str, str]:
        """The server (its address, or the folder of the dev server's history), namespace, task
        queue and heartbeat timeout."""
        kept = {"namespace": self.target.namespace, "task_queue": self.task_queue,
                "heartbeat_seconds": f"{self.heartbeat_seconds:g}"}
        if self.own_server:
            kept["data_dir"] = str(self._data_dir())
        else:
            kept["address"] = self.target.address
            if self.target.ui:
                kept["ui"] = self.target.ui
        return kept

    @classmethod
    def reopen(cls, settings: Mapping[str, str], **options: Any) -> TemporalRunner:
        """The run's runner from its recorded settings; options given (not None) win. A run of
        an own dev server is resumed on one of the same folder (unless an address is given, or
        TEMPORAL_ADDRESS is set)."""
        recorded: dict[str, Any] = {
            "address": settings.get("address") or None,
            "namespace": settings.get("namespace") or None,
            "task_queue": settings.get("task_queue") or None, "ui": settings.get("ui") or None,
            "heartbeat_seconds": float(settings["heartbeat_seconds"])
            if settings.get("heartbeat_seconds") else None,
            "data_dir": Path(settings["data_dir"]) if settings.get("data_dir") else None}
        return cls(**{**recorded, **{k: v for k, v in options.items() if v is not None}})

    def _record_run(self, joblog: JobLog, run_id: str, env: Mapping[str, str],
                    local_output: str) -> None:
        settings = self.settings()
        if env.get(config.FRAME_TIMEOUT):
            settings[config.FRAME_TIMEOUT] = env[config.FRAME_TIMEOUT]
        if local_output:  # where the video is downloaded to (workers may be elsewhere)
            settings["output"] = local_output
        run = joblog.get_run(run_id) or RunRecord(run_id=run_id, created_at=now_iso(),
                                                  output=env.get(config.OUTPUT) or local_output)
        joblog.put_run(replace(run, runner=self.name, settings=settings))

    # -- run, resume, cancel ---------------------------------------------------------------------

    def run(self, request: RunRequest, *, on_progress: ProgressCallback | None = None) -> RunResult:
        """Start (or attach to) the run's workflow and wait for it to end."""
        env = dict(request.env)
        run_id = env.setdefault(config.RUN_ID, new_run_id())
        storage = open_storage(env[config.STORAGE])
        local_output = self._prepare(env, storage)
        joblog = open_joblog(env[config.JOBLOG])
        self._record_run(joblog, run_id, env, local_output)
        request_in = RunInput(env=env, attempt_base=attempt_base(joblog, run_id),
                              heartbeat_seconds=self.heartbeat_seconds,
                              chunks_per_workflow=self.chunks_per_workflow)
        return self._drive(request_in, run_id, joblog=joblog, storage=storage,
                           local_output=local_output, on_progress=on_progress, resume=False)

    def resume(self, request: ResumeRequest, *,
               on_progress: ProgressCallback | None = None) -> RunResult:
        """Start the run's workflow again for the request's chunks (no plan job), then encode."""
        env = dict(request.env)
        run = request.run
        run_id = env.setdefault(config.RUN_ID, run.run_id)
        if not env.get(config.OUTPUT) and run.settings.get("output"):
            env[config.OUTPUT] = run.settings["output"]
        storage = open_storage(env[config.STORAGE])
        local_output = self._prepare(env, storage)
        joblog = open_joblog(env[config.JOBLOG])
        self._record_run(joblog, run_id, env, local_output)
        plan, video = run.plan, run.plan.get("video") or {}
        total, per_job = int(plan["total_frames"]), int(plan["frames_per_job"])
        planned = PlanOutput(run_id=run_id, chunks=-(-total // per_job), total_frames=total,
                             frames_per_job=per_job, output=str(plan.get("output", "")),
                             width=int(video.get("width", 0)), height=int(video.get("height", 0)),
                             fps=str(video.get("fps", "")))
        request_in = RunInput(env=env, attempt_base=attempt_base(joblog, run_id),
                              heartbeat_seconds=self.heartbeat_seconds,
                              chunks_per_workflow=self.chunks_per_workflow,
                              chunks=list(request.chunks), plan=planned)
        return self._drive(request_in, run_id, joblog=joblog, storage=storage,
                           local_output=local_output, on_progress=on_progress, resume=True)

    def cancel(self, run: RunRecord, *, joblog: JobLog) -> str:
        """Cancel the run's workflow (its jobs stop at their next frame, recording CANCELLED)
        and wait for it to end; what is still open in the job log is recorded CANCELLED."""
        target: TemporalTarget | None = self.target
        said = "no command was rendering it"
        if self.own_server:  # the dev server of the render command, if it still runs
            address = running_address(self._data_dir())
            target = TemporalTarget(address=address, namespace=self.target.namespace) \
                if address else None
        if target is not None:
            data_dir = self._data_dir()

            def gone() -> bool:  # an own dev server stops with its render command
                return self.own_server and running_address(data_dir) is None

            try:
                said = run_with_runtime(lambda runtime: cancel_workflow(target, run.run_id,
                                                                         runtime, gone=gone))
            except UserError:
                if not self.own_server:
                    raise
                said = "its render command had just stopped"  # and its server with it
        close_open_attempts(joblog, run.run_id, status="CANCELLED",
                            error="cancelled by `framefarm cancel`")
        return said

    # -- the work --------------------------------------------------------------------------------

    def _prepare(self, env: dict[str, str], storage: Storage) -> str:
        """Complete the job contract for this runner's workers; the local path the video is
        downloaded to afterwards ("" when the workers write it themselves)."""
        local_output = ""
        timeout = config.resolve(env.get(config.FRAME_TIMEOUT) or None, config.FRAME_TIMEOUT, "")
        if timeout:  # flag, else this command's environment: the workers read only the contract
            env[config.FRAME_TIMEOUT] = str(timeout)
        if self.own_server:
            env.setdefault(config.PARALLELISM, str(self.workers or default_workers()))
        else:
            # Workers may be on other machines: the sketch goes to storage, the video comes back.
            stage_sketch(env, storage)
            local_output = take_local_output(env)
            if self.workers:
                env.setdefault(config.PARALLELISM, str(self.workers))
        for name, value in self.sizing_env().items():
            env.setdefault(name, value)
        return local_output

    def _drive(self, request: RunInput, run_id: str, *, joblog: JobLog, storage: Storage,
               local_output: str, on_progress: ProgressCallback | None, resume: bool) -> RunResult:
        try:
            result = run_with_runtime(lambda runtime: self._run(
                request, run_id, joblog, on_progress, runtime, resume=resume))
        except KeyboardInterrupt:  # before the run's own signal handling: nothing started yet
            return RunResult(run_id=run_id, succeeded=False, cancelled=True)
        if result.succeeded:
            fetch_output(storage, run_id, local_output)
        return result

    async def _run(self, request: RunInput, run_id: str, joblog: JobLog,
                   on_progress: ProgressCallback | None, runtime: Runtime, *,
                   resume: bool) -> RunResult:
        stop = asyncio.Event()
        with stop_on_signals(asyncio.get_running_loop(), stop):
            async with AsyncExitStack() as stack:
                target, pool = self.target, None
                if self.own_server:
                    server = DevServer(self._data_dir())
                    # A stopped run's workflow has ended (or was terminated) by the time the
                    # server goes: killed then, as its graceful stop takes over a second.
                    stack.callback(lambda: server.stop(grace=0 if stop.is_set() else STOP_TIMEOUT))
                    server.launch()
                    # The job processes' forkserver imports framefarm while the server starts.
                    pool = stack.enter_context(JobPool(self.workers or default_workers(),
                                                       announce=self.announce))
                    server.wait_ready()
                    target = TemporalTarget(address=server.address, namespace=target.namespace,
                                            ui=server.ui)
                # The tracing interceptor makes the start a span of the run and carries its
                # context to the workflow in Temporal headers; the own worker polls through a
                # plain client (its activities make spans of their own: temporal/_spans.py).
                client = await connect(target, runtime=runtime, interceptors=[TracingInterceptor()])
                plain = Client(client.service_client, namespace=target.namespace)
                if stop.is_set():  # stopped before the run began: nothing to cancel
                    return RunResult(run_id=run_id, succeeded=False, cancelled=True)
                where = ui_url(target, run_id)
                # Started before the own worker polls: a resumed run's workflow left running by
                # a killed command is terminated before the worker could take a job of it.
                handle, attached = await self._start(client, request, run_id, resume=resume,
                                                     ui=where)
                if not attached:
                    started_again(joblog, run_id)
                if pool is not None:
                    settings = WorkerSettings(task_queue=self.task_queue, processes=pool.processes,
                                              graceful_seconds=0)
                    await stack.enter_async_context(running_worker(plain, settings, pool))
                self.announce(f"run {run_id} {'was already' if attached else 'started'} on "
                              f"Temporal (task queue {self.task_queue!r}), see {where}")
                shown: dict[str, Any] = {"attached": attached, "links": {"temporal_ui": where}}
                waiting = asyncio.ensure_future(handle.result())
                began = time.monotonic()
                try:
                    if await self._follow(waiting, run_id, joblog, stop,
                                          on_progress=on_progress):
                        stop.set()
                        return await self._stop(handle, waiting, run_id, joblog, pool, shown,
                                                on_progress=on_progress, began=began)
                    result = _outcome(waiting, run_id, shown, on_progress=on_progress,
                                      began=began)
                    if result.cancelled:  # cancelled in Temporal: nothing may go on
                        stop.set()
                        if pool is not None:
                            pool.kill()
                        with contextlib.suppress(Exception):
                            close_open_attempts(joblog, run_id, status="CANCELLED", error=CANCELLED)
                    return result
                finally:
                    waiting.cancel()
                    await asyncio.gather(waiting, return_exceptions=True)

    async def _start(self, client: Client, request: RunInput, run_id: str, *, resume: bool,
                     ui: str) -> tuple[WorkflowHandle[Any, RunOutput], bool]:
        """Start the workflow, or attach to the one with this id that runs or succeeded.

        A resumed run starts a new one after any that ended (failed, cancelled, terminated or
        succeeded); one still running on an own dev server was left by a command that was
        killed, with nobody to drive it, and is terminated; elsewhere it is running on its
        workers, and resume is refused.
        """
        if resume:
            reuse = WorkflowIDReusePolicy.ALLOW_DUPLICATE
            conflict = WorkflowIDConflictPolicy.TERMINATE_EXISTING if self.own_server \
                else WorkflowIDConflictPolicy.FAIL
        else:
            reuse = WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY
            conflict = WorkflowIDConflictPolicy.USE_EXISTING
        try:
            handle = await client.start_workflow(
                RenderRun.run, request, id=run_id, task_queue=self.task_queue,
                id_conflict_policy=conflict, id_reuse_policy=reuse)
        except WorkflowAlreadyStartedError:
            if resume:
                raise UserError(f"run {run_id} is still running on Temporal ({ui}): follow it "
                                f"with `framefarm render ... --runner temporal --run-id {run_id}`, "
                                f"or stop it with `framefarm cancel {run_id}` and resume it "
                                "then") from None
            # It succeeded before: its result is the answer.
            return client.get_workflow_handle_for(RenderRun.run, run_id), True
        # The server says whether this call started the workflow or found it running.
        response = getattr(handle, "_start_workflow_response", None)
        return handle, not getattr(response, "started", True)

    async def _follow(self, waiting: asyncio.Future[RunOutput], run_id: str,
                      joblog: JobLog, stop: asyncio.Event, *,
                      on_progress: ProgressCallback | None) -> bool:
        """Report progress from the job log until the workflow ends (False), or until the run is
        to stop (True): a signal, or `framefarm cancel` in the job log."""
        stopping = asyncio.ensure_future(stop.wait())
        either: set[asyncio.Future[Any]] = {waiting, stopping}
        began = last_check = time.monotonic()
        cancelled_before = cancelled_at(joblog, run_id)
        hinted = False
        try:
            while not waiting.done():
                await asyncio.wait(either, timeout=POLL_SECONDS,
                                   return_when=asyncio.FIRST_COMPLETED)
                if waiting.done():
                    break
                if stop.is_set():
                    return True
                now = time.monotonic()
                if now - last_check >= CANCEL_CHECK_SECONDS:
                    last_check = now
                    cancelled = cancelled_at(joblog, run_id)
                    if cancelled and cancelled != cancelled_before:
                        self.announce(f"run {run_id} was cancelled (`framefarm cancel`): "
                                      "stopping it")
                        return True
                if on_progress is None:
                    continue
                progress = logged_progress(joblog, run_id, elapsed=time.monotonic() - began)
                if progress is not None:
                    on_progress(progress)
                elif not hinted and not self.own_server and now - began > NO_WORKER_HINT_SECONDS:
                    hinted = True
                    self.announce(f"run {run_id} waits for a worker: start one with `framefarm "
                                  f"worker --temporal-address {self.target.address} --task-queue "
                                  f"{self.task_queue}`")
        finally:
            stopping.cancel()
        return False

    async def _stop(self, handle: WorkflowHandle[Any, RunOutput],
                    waiting: asyncio.Future[RunOutput], run_id: str, joblog: JobLog,
                    pool: JobPool | None, shown: Mapping[str, Any], *,
                    on_progress: ProgressCallback | None, began: float) -> RunResult:
        """Stop the run: cancel its workflow, end its jobs in flight (an own worker's processes
        at once; other workers' jobs stop at their next frame) and record them CANCELLED, then
        give the workflow a moment to end cancelled."""
        with contextlib.suppress(Exception):  # it may have ended meanwhile
            await handle.cancel(reason=CANCELLED)
        if pool is not None:
            pool.kill()
        with contextlib.suppress(Exception):
            close_open_attempts(joblog, run_id, status="CANCELLED", error=CANCELLED)
        try:
            await asyncio.wait_for(asyncio.shield(waiting), STOP_WAIT_SECONDS)
        except TimeoutError:
            if self.own_server:  # its server stops with this command: nobody would drive it
                with contextlib.suppress(Exception):
                    await handle.terminate(reason=CANCELLED)
        except Exception:  # it ended cancelled, as asked
            pass
        else:  # it had finished just before the cancellation reached it
            return _outcome(waiting, run_id, shown, on_progress=on_progress, began=began)
        return RunResult(run_id=run_id, succeeded=False, cancelled=True, **shown)


def logged_progress(joblog: JobLog, run_id: str, *, elapsed: float) -> Progress | None:
    """The run's progress as the job log shows it, counted as every runner counts it
    (Progress.of); None until its plan is recorded (no worker has planned it yet)."""
    run = joblog.get_run(run_id)
    plan = dict(run.plan) if run else {}
    if not plan.get("size"):
        return None
    latest = list({r.job: r for r in joblog.jobs(run_id)}.values())  # each job's last attempt
    return Progress.of(run_id, latest, total_frames=int(plan["total_frames"]),
                       chunks=int(plan["size"]), elapsed=elapsed)


def _outcome(waiting: asyncio.Future[RunOutput], run_id: str, shown: Mapping[str, Any], *,
             on_progress: ProgressCallback | None, began: float) -> RunResult:
    """How the ended workflow went, as a RunResult."""
    try:
        done = waiting.result()
    except WorkflowFailureError as err:
        return _failed(run_id, err, shown)
    if on_progress is not None:
        on_progress(Progress(run_id=run_id, total_frames=done.plan.total_frames,
                             frames_done=done.plan.total_frames, chunks=done.plan.chunks,
                             chunks_done=done.plan.chunks, elapsed=time.monotonic() - began))
    plan = JobOutcome(job="plan", run_id=run_id, succeeded=True, result=asdict(done.plan))
    encode = JobOutcome(job="encode", run_id=run_id, succeeded=True, result=asdict(done.encode))
    return RunResult(run_id=run_id, succeeded=True, plan=plan, encode=encode, **shown)


def _failed(run_id: str, err: WorkflowFailureError, shown: Mapping[str, Any]) -> RunResult:
    """A failed run as a RunResult: the failed jobs the workflow reported, as the local runner
    would report them; a cancelled workflow is a cancelled run."""
    cause = err.cause
    if isinstance(cause, CancelledError):
        return RunResult(run_id=run_id, succeeded=False, cancelled=True, **shown)
    if isinstance(cause, ApplicationError) and cause.details and isinstance(cause.details[0], list):
        failures = tuple(JobOutcome(job=f["job"], run_id=run_id, succeeded=False,
                                    index=f.get("index"), exit_code=int(f.get("exit_code", 1)),
                                    error=f.get("error", "")) for f in cause.details[0])
    else:  # terminated, timed out, or a bug: what Temporal says
        why = f"terminated ({cause.message})" if isinstance(cause, TerminatedError) \
            else f"failed: {cause or err}"
        failures = (JobOutcome(job="workflow", run_id=run_id, succeeded=False, exit_code=1,
                               error=f"the run's workflow {why}"),)
    plan = next((f for f in failures if f.job == "plan"), None)
    return RunResult(run_id=run_id, succeeded=False, plan=plan, failures=failures, **shown)
