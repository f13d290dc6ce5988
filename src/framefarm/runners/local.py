"""The local runner: plan in this process, render chunks in worker processes, then encode —
every job started through the job contract, exactly as a container would be.

A worker process renders one chunk at a time, as many chunks as it is given (the sketch's
setup runs once per process). A worker that dies — any signal, any exit code, `sys.exit` in
the sketch, a frame out of time — costs only its chunk: the attempt is recorded FAILED, naming
the frame it was on and how the process ended, and the chunk is retried in a fresh process,
up to MAX_ATTEMPTS attempts in all as on AWS Batch; the other chunks go on. A sketch that
raises is not retried. Ctrl-C or SIGTERM (`framefarm cancel`) stops dispatching, kills the
workers, records their attempts CANCELLED and returns at once.

The run holds its lease in the job log for as long as this runner drives it, so a second
`render` or `resume` of the same run is refused.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import multiprocessing.util
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from framefarm import _otel, config, job, limits, tracing
from framefarm._procs import (
    die_with,
    die_with_parent,
    fork_forkserver,
    how_it_ended,
    native_threads,
    process_alive,
)
from framefarm.errors import UserError
from framefarm.integrity import describe_chunk
from framefarm.job import JobEnv, run_job
from framefarm.joblog import JobLog, StatusConflict, now_iso
from framefarm.joblog._base import LEASE_SECONDS
from framefarm.lifecycle import HEARTBEAT_SECONDS, PID_PREFIX, close_open_attempts, lost
from framefarm.model import TERMINAL_STATUSES, Chunk, JobOutcome, Lease, RunRecord
from framefarm.runners._base import (
    Progress,
    ProgressCallback,
    ResumeRequest,
    Runner,
    RunRequest,
    RunResult,
    process_backends,
)

POLL_SECONDS = 0.2
CANCEL_CHECK_SECONDS = 1.0
"""How often the driver reads the job log for a `framefarm cancel` from another machine."""
KILL_GRACE_SECONDS = 5.0
"""How long past the frame timeout a worker's interpreter may stay held (its tick silent)
before the runner kills it: its own watch stops a slow frame first, unless native code holds
the interpreter so that no thread of it runs."""
_PRELOAD = ["framefarm.job", "numpy", "av", "PIL.Image"]
_CANCELLED = "cancelled: the run was stopped (Ctrl-C, SIGTERM or `framefarm cancel`)"
_DONE, _TICK = 0, 1
"""A worker's shared state: frames done in its chunk, and its tick (monotonic seconds)."""
_TICK_SECONDS = 0.25
_SCRATCH_PREFIX = "framefarm-driver"
"""Worker scratch folders are named framefarm-driver{pid}-{run}-w{n}-…, after their driver."""


def sweep_scratch() -> None:
    """Remove the scratch folders of drivers that are gone (a driver killed with SIGKILL
    cannot remove its workers' partial segments itself)."""
    root = Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):
        for folder in root.glob(f"{_SCRATCH_PREFIX}*-w*-*"):
            pid = folder.name.removeprefix(_SCRATCH_PREFIX).partition("-")[0]
            if pid.isdigit() and not process_alive(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)


def default_workers() -> int:
    """One worker per CPU this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def _start_worker(traced: bool) -> None:
    """A worker process starts: tune memory; set up tracing when the parent traces (a forked
    worker inherited it; one from the forkserver sets it up from the same environment)."""
    _keep_freed_memory()
    if traced:
        _otel.setup()


def _keep_freed_memory() -> None:
    """Keep memory that is freed in the process rather than give it back to the OS.

    Each chunk opens a new x264 encoder, which allocates ~200 MB of buffers at 720p and frees them
    when its segment ends. glibc hands such blocks back to the kernel, so every chunk faulted the
    same pages in again (~25,000 page faults, ~0.05 s of system time per chunk). Kept, later
    chunks reuse them; a worker's peak memory is the same.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return
    mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # glibc's largest; x264's buffers are smaller


def run_contract_job(env: Mapping[str, str],
                     on_frame: Callable[[int], None] | None = None) -> JobOutcome:
    """Run one job from its job-contract variables (the worker processes' entry point)."""
    storage, joblog = process_backends(env)
    # The process is the job's runner id, so a reader on this machine knows at once when it
    # is gone (lifecycle.lost).
    contract = replace(JobEnv.from_environ(env), runner_id=f"{PID_PREFIX}{os.getpid()}")
    return run_job(contract, storage=storage, joblog=joblog, on_frame=on_frame)


def _worker_main(conn: Connection, state: Any, scratch: str, traced: bool, parent: int) -> None:
    """A worker process: render the chunks it is sent, one at a time, until told to stop.

    `state` is shared with the runner: frames done in the current chunk, and a tick that a
    thread of the worker renews four times a second, so the runner can name the frame a dead
    worker was on and kill one whose interpreter native code holds (the tick stops; a worker
    that only waits, on the job log say, keeps ticking). Ctrl-C is the runner's to handle; the
    worker ends with the runner.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent()
    die_with(parent)
    job.say_timeouts = False  # the runner reports them
    tempfile.tempdir = scratch  # partial segments go where the runner cleans up
    os.environ["TMPDIR"] = scratch
    _start_worker(traced)

    def on_frame(done: int) -> None:
        state[_DONE] = done

    def tick() -> None:
        while True:
            state[_TICK] = time.monotonic()
            time.sleep(_TICK_SECONDS)

    threading.Thread(target=tick, daemon=True, name="framefarm-worker-tick").start()
    while True:
        try:
            env = conn.recv()
        except (EOFError, OSError):
            return
        if env is None:
            return
        state[_DONE] = 0
        try:
            outcome = run_contract_job(env, on_frame)
        except SystemExit as exc:  # the sketch called sys.exit: a crash, as os._exit would be
            os._exit(exc.code if isinstance(exc.code, int) and 0 < exc.code < 256 else 1)
        conn.send(outcome)


@dataclass
class _Task:
    """A chunk in hand: its frames and the attempts it has had."""

    chunk: Chunk
    tries: int = 0
    cpus: int = 1
    """CPUs the current attempt was given: its worker draws in that many processes."""
    sent_at: str = ""
    """When the current attempt was handed to a worker (job-log time)."""


class _Worker:
    """One worker process, the pipe to it, and its shared state and scratch folder."""

    def __init__(self, context: BaseContext, number: int, run_id: str) -> None:
        self.scratch = Path(tempfile.mkdtemp(
            prefix=f"{_SCRATCH_PREFIX}{os.getpid()}-{run_id[:40]}-w{number}-"))
        self.state = context.Array("d", 2, lock=False)
        self.conn, child = context.Pipe()
        self.process: BaseProcess = context.Process(  # type: ignore[attr-defined]
            target=_worker_main, name=f"framefarm-worker-{number}", daemon=True,
            args=(child, self.state, str(self.scratch), _otel.active(), os.getpid()))
        self.process.start()
        child.close()
        self.task: _Task | None = None
        self.frame_began = time.monotonic()

    def send(self, task: _Task, env: Mapping[str, str]) -> None:
        if not self.process.is_alive():
            raise BrokenPipeError(f"worker pid {self.process.pid} is gone")
        self.state[_DONE], self.state[_TICK] = 0, time.monotonic()
        self.conn.send(dict(env))
        self.task = task

    @property
    def frame(self) -> int | None:
        """The frame the worker is on (its chunk's first plus the frames it finished)."""
        if self.task is None:
            return None
        return min(self.task.chunk.start + int(self.state[_DONE]), self.task.chunk.stop - 1)

    @property
    def finishing(self) -> bool:
        """Every frame of its chunk is done: it is storing the segment and recording it."""
        return self.task is not None and int(self.state[_DONE]) >= len(self.task.chunk)

    def silent_for(self) -> float:
        """Seconds since the worker's tick: how long its interpreter has been held."""
        return time.monotonic() - float(self.state[_TICK])

    def kill(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid or 0, signal.SIGKILL)
        self.process.join(5)
        self.close()

    def stop(self) -> None:
        """Ask an idle worker to end, then make sure it did."""
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(5)
        self.kill()

    def close(self) -> None:
        self.conn.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


class LocalRunner(Runner):
    """Worker processes on this machine; the job log and storage are shared through files."""

    name = "local"
    start_cost_seconds = 0.005

    def __init__(self, *, workers: int | None = None, max_memory: int | None = None,
                 announce: Callable[[str], None] | None = None) -> None:
        """`max_memory`: bytes the run may take (default: what the machine has available when
        the chunks start); it caps the chunks encoded at once, and the other workers draw."""
        self.workers = workers or default_workers()
        self.max_memory = max_memory
        self.announce = announce or (lambda line: None)
        self._threads_before: frozenset[str] = frozenset()
        """The native threads this process had when the run began (see _context)."""
        self._real_tempdir: str | None = None
        """tempfile.tempdir outside the run's scratch folder (see _socket_folder)."""

    @classmethod
    def reopen(cls, settings: Mapping[str, str], **options: Any) -> LocalRunner:
        """A local runner for `resume`: the flags given to it (workers) win."""
        return cls(**options)

    # -- run, resume, cancel ------------------------------------------------------------------

    def run(self, request: RunRequest, *, on_progress: ProgressCallback | None = None) -> RunResult:
        """Plan here, render in `workers` processes, encode here once every chunk succeeded."""
        from framefarm.steps import new_run_id

        self._threads_before = native_threads()  # before the plan runs the sketch (_context)
        env = self._env(request.env)
        run_id = env.setdefault(config.RUN_ID, new_run_id())
        _, joblog = process_backends(env)
        with self._lease(joblog, run_id) as lease:
            self._record_run(joblog, run_id, env)
            try:
                with _kept(joblog, lease):
                    plan = run_contract_job({**env, config.JOB_TYPE: "plan"})
            except KeyboardInterrupt:
                return RunResult(run_id=run_id, succeeded=False, cancelled=True)
            if not plan.succeeded:
                return RunResult(run_id=plan.run_id, succeeded=False, plan=plan, failures=(plan,))
            result = plan.result
            chunks = _chunks(int(result["total_frames"]), int(result["frames_per_job"]))
            return self._render_and_encode(env, lease, chunks, total=int(result["total_frames"]),
                                           plan=plan, on_progress=on_progress)

    def resume(self, request: ResumeRequest, *,
               on_progress: ProgressCallback | None = None) -> RunResult:
        """Render the request's chunks of the planned run, then encode."""
        self._threads_before = native_threads()
        env = self._env(request.env)
        run_id = request.run.run_id
        _, joblog = process_backends(env)
        plan = request.run.plan
        total, per_job = int(plan["total_frames"]), int(plan["frames_per_job"])
        wanted = set(request.chunks)
        chunks = [c for c in _chunks(total, per_job) if c.index in wanted]
        with self._lease(joblog, run_id) as lease:
            joblog.update_run(run_id, lambda run: replace(run or request.run, runner=self.name))
            # Holding the lease, no other driver runs it: what shows running and is lost (its
            # process gone) is recorded so.
            gone = [r.job for r in joblog.jobs(run_id) if lost(r)]
            if gone:
                close_open_attempts(joblog, run_id, status="FAILED", jobs=gone,
                                    error="lost: still recorded as running when the run was "
                                          "resumed; its process had gone (the command was killed)")
            return self._render_and_encode(env, lease, chunks, total=total, plan=None,
                                           on_progress=on_progress)

    def cancel(self, run: RunRecord, *, joblog: JobLog) -> str:
        """Stop the run's driver on this machine (SIGTERM, as Ctrl-C) and wait for it to record
        its jobs; a driver on another machine sees the cancellation in the job log."""
        lease = joblog.lease(run.run_id)
        if lease is not None:
            if lease.host == _hostname() and _is_framefarm(lease.pid):
                os.kill(lease.pid, signal.SIGTERM)  # stops at once, as on Ctrl-C
            # Any driver sees the cancellation in the job log within CANCEL_CHECK_SECONDS and
            # records its own jobs; wait for it to let go of the run.
            deadline = time.monotonic() + 15
            while joblog.lease(run.run_id) is not None and time.monotonic() < deadline:
                time.sleep(0.1)
            if joblog.lease(run.run_id) is not None:
                return (f"its driver, {lease.describe()}, has not stopped yet; it stops at its "
                        "next look at the job log")
        # No driver is left: what still shows running is recorded as cancelled.
        close_open_attempts(joblog, run.run_id, status="CANCELLED",
                            error="cancelled by `framefarm cancel`")
        return f"stopped its driver, pid {lease.pid}" if lease else "no process was rendering it"

    # -- the work -----------------------------------------------------------------------------

    def _env(self, given: Mapping[str, str]) -> dict[str, str]:
        # Each chunk is given its share of the workers as CPUs when it is sent (_Drive).
        return {config.PARALLELISM: str(self.workers), **self.sizing_env(), **given}

    @contextlib.contextmanager
    def _lease(self, joblog: JobLog, run_id: str) -> Iterator[Lease]:
        """Hold the run's lease, with a scratch folder of the driver's own for the jobs it runs
        in this process (plan, encode), swept like the workers' if the driver is killed."""
        lease = joblog.acquire_lease(run_id)
        sweep_scratch()
        scratch = tempfile.mkdtemp(prefix=f"{_SCRATCH_PREFIX}{os.getpid()}-{run_id[:40]}-w0-")
        before = self._real_tempdir = tempfile.tempdir
        tempfile.tempdir = scratch
        try:
            yield lease
        finally:
            tempfile.tempdir = before
            shutil.rmtree(scratch, ignore_errors=True)
            with contextlib.suppress(Exception):
                joblog.release_lease(lease)

    def _record_run(self, joblog: JobLog, run_id: str, env: Mapping[str, str]) -> None:
        settings = {k: env[k] for k in (config.FRAME_TIMEOUT, config.STORAGE) if env.get(k)}
        joblog.update_run(run_id, lambda run: replace(
            run or RunRecord(run_id=run_id, created_at=now_iso(), output=env.get(config.OUTPUT, "")),
            runner=self.name, settings=settings, cancelled_at=""))

    def _render_and_encode(self, env: dict[str, str], lease: Lease, chunks: list[Chunk], *,
                           total: int, plan: JobOutcome | None,
                           on_progress: ProgressCallback | None) -> RunResult:
        run_id = env[config.RUN_ID]
        _, joblog = process_backends(env)
        run = joblog.get_run(run_id)
        encoders = self._encoders(run.plan.get("video", {}) if run and run.plan else {}, chunks)
        drive = _Drive(self, env, joblog, lease, chunks, total=total, on_progress=on_progress,
                       encoders=encoders)
        try:
            failures = drive.render()
        except KeyboardInterrupt:
            return RunResult(run_id=run_id, succeeded=False, plan=plan, cancelled=True)
        if drive.lost_lease:
            taken = JobOutcome(job="run", run_id=run_id, succeeded=False, exit_code=1,
                               error=f"run {run_id}: another driver took the run over while this "
                                     "one was not renewing its lease; this one stopped")
            return RunResult(run_id=run_id, succeeded=False, plan=plan, failures=(taken,))
        if drive.cancelled:
            return RunResult(run_id=run_id, succeeded=False, plan=plan, cancelled=True)
        if failures:
            failures.sort(key=lambda o: o.index or 0)
            return RunResult(run_id=run_id, succeeded=False, plan=plan, failures=tuple(failures))
        try:
            with _kept(joblog, lease):
                encode = run_contract_job({**env, config.JOB_TYPE: "encode"})
        except KeyboardInterrupt:
            return RunResult(run_id=run_id, succeeded=False, plan=plan, cancelled=True)
        return RunResult(run_id=run_id, succeeded=encode.succeeded, plan=plan, encode=encode,
                         failures=() if encode.succeeded else (encode,))

    def _encoders(self, video: Mapping[str, Any], chunks: list[Chunk]) -> int:
        """How many chunks may encode at once in `max_memory`: each takes an encoder's memory,
        and every worker beyond them a drawer's. Fewer than there are workers and chunks is
        said; none at all is a UserError."""
        from framefarm.steps._sizing import drawer_memory, encoder_memory

        width, height = int(video.get("width") or 1280), int(video.get("height") or 720)
        encoder = encoder_memory(width=width, height=height, preset=str(video.get("preset", "")))
        drawer = drawer_memory(width=width, height=height)
        budget = self.max_memory or limits.available_memory()
        wanted = max(1, min(self.workers, len(chunks)))
        fits = next((n for n in range(wanted, 0, -1)
                     if n * encoder + (self.workers if self.workers > n else 0) * drawer
                     <= budget), 0)
        where = "--max-memory" if self.max_memory else "this machine's available memory"
        if not fits:
            raise UserError(f"{where} ({limits.shown_memory(budget)}) is less than one chunk "
                            f"needs at {width}x{height} (about {limits.shown_memory(encoder)}): "
                            f"give more with --max-memory, or use a smaller --size or fewer --workers")
        if fits < wanted:
            self.announce(f"{where} ({limits.shown_memory(budget)}) fits {fits} chunks encoding "
                          f"at once at {width}x{height} (about {limits.shown_memory(encoder)} "
                          f"each); the other workers draw their frames")
        return fits

    def _socket_folder(self) -> None:
        """Before a forkserver starts: multiprocessing's temporary folder, where its socket goes,
        made in the real temporary folder, not in the run's scratch folder (multiprocessing
        keeps it for the process's life, and removes it at exit)."""
        scratch, tempfile.tempdir = tempfile.tempdir, self._real_tempdir
        try:
            multiprocessing.util.get_temp_dir()
        finally:
            tempfile.tempdir = scratch

    def _context(self) -> BaseContext:
        # fork when this process runs no Python thread but its main one and no native thread
        # started since the run began (the plan ran the sketch here: a GL driver's threads,
        # x264's of an encoder not yet collected): workers start in milliseconds with
        # framefarm, NumPy and PyAV already imported. Native threads from before the run
        # (NumPy's BLAS pool, which handles fork itself) are trusted, as they always were.
        # Otherwise (a fork copies the threads' locks without the threads) fork from a
        # forkserver that imported them once.
        if (threading.active_count() == 1 and native_threads() <= self._threads_before
                and "fork" in multiprocessing.get_all_start_methods()):
            return multiprocessing.get_context("fork")
        self._socket_folder()
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_PRELOAD)
        return context


class _Drive:
    """Renders a list of chunks in worker processes, retrying lost ones; the failures."""

    def __init__(self, runner: LocalRunner, env: Mapping[str, str], joblog: JobLog, lease: Lease,
                 chunks: list[Chunk], *, total: int, on_progress: ProgressCallback | None,
                 encoders: int) -> None:
        self.runner = runner
        self.encoders = encoders
        """The most chunks in flight at once (memory allows no more)."""
        self.env = env
        self.run_id = env[config.RUN_ID]
        self.joblog = joblog
        self.lease = lease
        self.queue = deque(_Task(c) for c in chunks)
        self.chunks = len(chunks)
        self.total = total
        self.on_progress = on_progress
        self.timeout = JobEnv.from_environ({**env, config.JOB_TYPE: "encode"}).frame_timeout
        self.workers: list[_Worker] = []
        self.failures: list[JobOutcome] = []
        self.cancelled = False
        self.lost_lease = False
        self._context: BaseContext | None = None
        self._spawned = 0

    def render(self) -> list[JobOutcome]:
        if not self.queue:
            return []
        self._context = self.runner._context()
        if self._context.get_start_method() == "fork" and self._drawn_by_several():
            # Drawers must not be forks of their job, which has threads (steps/_drawing.py):
            # they start from a forkserver that is a fork of this process, made before the
            # workers, which share it. (A fork costs milliseconds, a fresh interpreter's
            # imports 0.3 s; a worker without it starts its own.)
            self.runner._socket_folder()
            fork_forkserver()
        began = last_renew = last_check = time.monotonic()
        try:
            for _ in range(min(self.runner.workers, len(self.queue), self.encoders)):
                self._spawn()
            while self.queue or any(w.task for w in self.workers):
                self._dispatch()
                ready = wait_for([w.conn for w in self.workers if w.task] +
                                 [w.process.sentinel for w in self.workers], timeout=POLL_SECONDS)
                for worker in list(self.workers):
                    if worker.conn in ready or worker.process.sentinel in ready:
                        self._collect(worker)
                    elif worker.task and self.timeout and \
                            worker.silent_for() > self.timeout + KILL_GRACE_SECONDS:
                        worker.kill()  # stuck in native code: its own watch could not stop it
                        self._lost(worker, stuck=True)
                now = time.monotonic()
                if now - last_renew >= HEARTBEAT_SECONDS:
                    last_renew = now
                    if not self._renew():
                        self._stop_all(because="its lease was taken by another driver")
                        return []
                if now - last_check >= CANCEL_CHECK_SECONDS:
                    last_check = now
                    if self._cancel_requested():
                        self._stop_all()
                        return []
                if self.on_progress is not None:
                    with tracing.untraced():  # polling is waiting, not work: no spans
                        self.on_progress(self._progress(now - began))
        except KeyboardInterrupt:
            self._stop_all()
            raise
        finally:
            for worker in self.workers:
                worker.stop()
            self.workers.clear()
        return self.failures

    def _drawn_by_several(self) -> bool:
        """Some chunk will start with more than one CPU: fewer chunks than workers."""
        return (self.runner.workers > min(len(self.queue), self.encoders)
                and any(len(task.chunk) > 1 for task in self.queue))

    # -- workers ------------------------------------------------------------------------------

    def _spawn(self) -> _Worker:
        assert self._context is not None
        self._spawned += 1
        worker = _Worker(self._context, self._spawned, self.run_id)
        self.workers.append(worker)
        return worker

    def _dispatch(self) -> None:
        for worker in list(self.workers):
            if worker.task is None and self.queue:
                cpus = self._cpus_for_next()
                if not cpus:
                    return
                task = self.queue.popleft()
                task.tries += 1
                task.cpus = cpus
                task.sent_at = now_iso()  # before the worker can record its start
                try:
                    worker.send(task, {**self.env, config.JOB_TYPE: "render",
                                       config.ARRAY_INDEX: str(task.chunk.index),
                                       config.JOB_CPUS: str(cpus)})
                except OSError:  # it died while idle: its chunk goes to a fresh one, untried
                    task.tries -= 1
                    worker.task = None
                    self.queue.appendleft(task)
                    self._lost(worker)

    def _cpus_for_next(self) -> int:
        """CPUs for the next chunk: an equal share of the free ones among the chunks left, so
        when fewer chunks than workers are left, each is drawn by several (0: none free)."""
        busy = [w.task.cpus for w in self.workers if w.task]
        free = max(0, self.runner.workers - sum(busy))
        if len(busy) >= self.encoders:
            return 0
        return -(-free // min(len(self.queue), self.encoders - len(busy)))

    def _collect(self, worker: _Worker) -> None:
        """The worker answered, or died."""
        outcome: JobOutcome | None = None
        if worker.task is not None and worker.conn.poll():
            with contextlib.suppress(EOFError, OSError):
                outcome = worker.conn.recv()
        if outcome is None:
            if worker.process.is_alive():
                worker.process.join(1)
            if worker.task is not None or not worker.process.is_alive():
                self._lost(worker)
            return
        task, worker.task = worker.task, None
        assert task is not None
        if outcome.succeeded:
            return
        if outcome.exit_code == 2 or task.tries >= config.MAX_ATTEMPTS:
            self.failures.append(outcome)  # a sketch error or bad input: a retry cannot help
            return
        self.runner.announce(f"{outcome.error.splitlines()[0]}; retrying "
                             f"(attempt {task.tries + 1} of {config.MAX_ATTEMPTS})")
        self.queue.appendleft(task)

    def _lost(self, worker: _Worker, *, stuck: bool = False) -> None:
        """A worker died (or was killed): record its attempt, retry its chunk, replace it."""
        task, frame = worker.task, worker.frame
        worker.kill()  # gone already, or silent with its pipe closed: either way, done
        exitcode = worker.process.exitcode
        self.workers.remove(worker)
        if task is not None:
            error = self._record_lost(task, frame, worker, exitcode, stuck=stuck)
            if task.tries < config.MAX_ATTEMPTS:
                self.runner.announce(f"{error.splitlines()[0]}; retrying (attempt "
                                     f"{task.tries + 1} of {config.MAX_ATTEMPTS})")
                self.queue.appendleft(task)
            else:
                self.failures.append(JobOutcome(job=f"render:{task.chunk.index}",
                                                run_id=self.run_id, succeeded=False,
                                                index=task.chunk.index, exit_code=1, error=error))
        if self.queue and len(self.workers) < min(self.runner.workers, self.encoders):
            self._spawn()

    def _record_lost(self, task: _Task, frame: int | None, worker: _Worker,
                     exitcode: int | None, *, stuck: bool) -> str:
        """Record the dead worker's attempt FAILED, unless it recorded why itself (its frame
        timeout); the error the user sees."""
        job = f"render:{task.chunk.index}"
        attempts = [r for r in self.joblog.jobs(self.run_id)
                    if r.job == job and r.started_at >= task.sent_at]
        record = max(attempts, key=lambda r: r.attempt, default=None)
        if record is not None and record.status == "FAILED" and record.error:
            # It said why before it went (its frame timeout, sys.exit in the sketch).
            head, _, rest = record.error.partition("\n")
            if not stuck and "frame timeout" not in head:
                head += f" (its worker, pid {worker.process.pid}, {how_it_ended(exitcode)})"
            return f"{head}\n{rest}".rstrip()
        if worker.finishing:
            where = "after its last frame, while storing its segment"
        elif frame is not None and frame == task.chunk.start:
            where = f"while starting the chunk or rendering frame {frame}"
        else:
            where = f"while rendering frame {frame}"
        if stuck:
            why = (f"frame {frame} took longer than the frame timeout of {self.timeout:g} s "
                   f"(--frame-timeout, {config.FRAME_TIMEOUT}) and its worker, pid "
                   f"{worker.process.pid}, was killed")
        else:
            why = f"lost: its worker process, pid {worker.process.pid}, {how_it_ended(exitcode)} {where}"
        error = f"{describe_chunk(task.chunk)}: {why}"
        if record is not None and record.status not in TERMINAL_STATUSES:
            with contextlib.suppress(StatusConflict):
                self.joblog.update_job(record, status="FAILED", error=error)
        return error

    def _renew(self) -> bool:
        """Renew the run's lease; False when another driver holds it now (this one was taken
        for dead: its machine moved it elsewhere, say). A job log that does not answer now
        keeps the lease as it was."""
        try:
            renewed = self.joblog.renew_lease(self.lease)
        except Exception:  # a busy or failing job log: try again at the next beat
            return True
        if renewed is None:
            holder = self.joblog.lease(self.run_id)
            self.runner.announce(f"run {self.run_id}: stopping, another driver took it over"
                                 + (f" ({holder.describe()})" if holder else ""))
            self.lost_lease = True
            return False
        self.lease = renewed
        return True

    def _cancel_requested(self) -> bool:
        with tracing.untraced():
            run = self.joblog.get_run(self.run_id)
        return bool(run and run.cancelled_at)

    def _stop_all(self, because: str = "") -> None:
        """Kill every worker at once and record the attempts in flight CANCELLED."""
        self.cancelled = True
        stops = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stops)  # a second Ctrl-C waits for this
        try:
            in_flight = [f"render:{w.task.chunk.index}" for w in self.workers if w.task]
            for worker in self.workers:
                worker.kill()
            self.workers.clear()
            self.queue.clear()
            with contextlib.suppress(Exception):
                close_open_attempts(self.joblog, self.run_id, status="CANCELLED",
                                    error=f"cancelled: {because}" if because else _CANCELLED,
                                    jobs=in_flight)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)

    def _progress(self, elapsed: float) -> Progress:
        return Progress.of(self.run_id, self.joblog.latest_jobs(self.run_id),
                           total_frames=self.total, chunks=self.chunks, elapsed=elapsed)


def _chunks(total: int, per_job: int) -> list[Chunk]:
    return [Chunk(i, start, min(start + per_job, total))
            for i, start in enumerate(range(0, total, per_job))]


@contextlib.contextmanager
def _kept(joblog: JobLog, lease: Lease) -> Iterator[None]:
    """Renew the lease from a thread while a job runs in this process (plan, encode); the
    thread has ended when the block does, so workers can still be forked afterwards."""
    stop = threading.Event()

    def renew() -> None:
        try:
            while not stop.wait(HEARTBEAT_SECONDS):
                with contextlib.suppress(Exception), tracing.untraced():
                    joblog.renew_lease(lease, seconds=LEASE_SECONDS)
        finally:
            joblog.release_thread()

    thread = threading.Thread(target=renew, daemon=True, name="framefarm-lease")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _hostname() -> str:
    import socket

    return socket.gethostname()


def _is_framefarm(pid: int) -> bool:
    """True when process `pid` runs framefarm (a lease's pid, checked before it is signalled)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"framefarm" in f.read()
    except OSError:
        return False
