"""The local runner: plan in this process, render chunks in worker processes, then encode —
every job started through the job contract, exactly as a container would be."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing.context import BaseContext

from framefarm import _otel, config, tracing
from framefarm.job import JobEnv, run_job
from framefarm.joblog import JobLog, open_joblog
from framefarm.model import JobOutcome
from framefarm.runners._base import Progress, ProgressCallback, Runner, RunRequest, RunResult
from framefarm.storage import Storage, open_storage

POLL_SECONDS = 0.2
_PRELOAD = ["framefarm.job", "numpy", "av", "PIL.Image"]


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


_backends: dict[tuple[str, str], tuple[Storage, JobLog]] = {}


def _open(env: Mapping[str, str]) -> tuple[Storage, JobLog]:
    """Storage and job log for this process, opened once and reused by every job it runs."""
    key = (env[config.STORAGE], env[config.JOBLOG])
    if key not in _backends:
        _backends[key] = (open_storage(key[0]), open_joblog(key[1]))
    return _backends[key]


def run_contract_job(env: Mapping[str, str]) -> JobOutcome:
    """Run one job from its job-contract variables (the worker processes' entry point)."""
    storage, joblog = _open(env)
    return run_job(JobEnv.from_environ(env), storage=storage, joblog=joblog)


class LocalRunner(Runner):
    """Worker processes on this machine; the job log and storage are shared through files."""

    name = "local"
    start_cost_seconds = 0.005

    def __init__(self, *, workers: int | None = None) -> None:
        self.workers = workers or default_workers()

    def run(self, request: RunRequest, *, on_progress: ProgressCallback | None = None) -> RunResult:
        """Plan here, render in `workers` processes, encode here once every chunk succeeded."""
        # Each worker gets an equal share of the CPUs: one x264 thread per CPU it owns, so
        # encoder threads never fight the other workers' sketches for cores.
        cpus = max(1, default_workers() // self.workers)
        env = {config.PARALLELISM: str(self.workers), config.JOB_CPUS: str(cpus),
               config.JOB_START_SECONDS: str(self.start_cost_seconds), **request.env}
        plan = run_contract_job({**env, config.JOB_TYPE: "plan"})
        if not plan.succeeded:
            return RunResult(run_id=plan.run_id, succeeded=False, plan=plan, failures=(plan,))
        run_id = plan.run_id
        env[config.RUN_ID] = run_id
        chunks = int(plan.result["size"])
        total = int(plan.result["total_frames"])
        _, joblog = _open(env)
        failures: list[JobOutcome] = []
        began = time.monotonic()
        with self._pool(min(self.workers, chunks)) as pool:
            pending: set[Future[JobOutcome]] = {
                pool.submit(run_contract_job,
                            {**env, config.JOB_TYPE: "render", config.ARRAY_INDEX: str(i)})
                for i in range(chunks)
            }
            try:
                while pending:
                    finished, pending = wait(pending, timeout=POLL_SECONDS,
                                             return_when=FIRST_COMPLETED)
                    failures.extend(f.result() for f in finished if not f.result().succeeded)
                    if on_progress is not None:
                        with tracing.untraced():  # polling is waiting, not work: no spans
                            progress = self._progress(joblog, run_id, total, chunks,
                                                      time.monotonic() - began)
                        on_progress(progress)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        if failures:
            failures.sort(key=lambda o: o.index or 0)
            return RunResult(run_id=run_id, succeeded=False, plan=plan, failures=tuple(failures))
        encode = run_contract_job({**env, config.JOB_TYPE: "encode"})
        return RunResult(run_id=run_id, succeeded=encode.succeeded, plan=plan, encode=encode,
                         failures=() if encode.succeeded else (encode,))

    def _pool(self, workers: int) -> ProcessPoolExecutor:
        # fork when this process has a single thread: workers start in milliseconds with
        # framefarm, NumPy and PyAV already imported. Otherwise (threads do not survive a fork
        # safely) fork from a forkserver that imported them once.
        context: BaseContext
        if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("fork")
        else:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(_PRELOAD)
        return ProcessPoolExecutor(max_workers=max(1, workers), mp_context=context,
                                   initializer=_start_worker, initargs=(_otel.active(),))

    @staticmethod
    def _progress(joblog: JobLog, run_id: str, total: int, chunks: int,
                  elapsed: float) -> Progress:
        latest = [r for r in joblog.latest_jobs(run_id) if r.kind == "render"]
        return Progress(run_id=run_id, total_frames=total,
                        frames_done=sum(r.frames for r in latest), chunks=chunks,
                        chunks_done=sum(r.status == "SUCCEEDED" for r in latest), elapsed=elapsed)
