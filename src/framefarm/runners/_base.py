"""The Runner interface: a runner decides when and where each job of a run starts; it hands every
job the job contract's variables and knows nothing of pixels."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from framefarm import config
from framefarm.errors import UserError
from framefarm.joblog import JobLog, open_joblog
from framefarm.model import JobOutcome, JobRecord, RunRecord
from framefarm.storage import Storage, open_storage


@dataclass(frozen=True, kw_only=True)
class Progress:
    """How far a run has come, as a runner reports it while it waits."""

    run_id: str
    total_frames: int
    frames_done: int
    chunks: int
    chunks_done: int
    elapsed: float
    """Seconds since the render jobs were started."""

    @classmethod
    def of(cls, run_id: str, latest: Sequence[JobRecord], *, total_frames: int, chunks: int,
           elapsed: float) -> Progress:
        """The progress the job log shows: `latest` holds each job's last attempt (every
        runner counts it so, and `framefarm status` too: report.frames_done)."""
        renders = [r for r in latest if r.kind == "render"]
        return cls(run_id=run_id, total_frames=total_frames,
                   frames_done=sum(r.frames for r in renders), chunks=chunks,
                   chunks_done=sum(r.status == "SUCCEEDED" for r in renders), elapsed=elapsed)


@dataclass(frozen=True, kw_only=True)
class RunRequest:
    """One run: the job contract for every job (JOB_TYPE and the index are added per job)."""

    env: Mapping[str, str]


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """How a run ended: the plan's outcome, the failed jobs (by index), the encode's outcome."""

    run_id: str
    succeeded: bool
    plan: JobOutcome | None = None
    encode: JobOutcome | None = None
    failures: tuple[JobOutcome, ...] = ()
    waited: bool = True
    """False: the runner submitted the run and returned before it ended (AWS Batch without
    --wait): the video is not there yet."""
    attached: bool = False
    """Another `framefarm render` started this run and this one followed it (Temporal): its
    trace is that command's."""
    output_url: str = ""
    """Where the video is, or will be, in the run's storage (a submitted run)."""
    links: Mapping[str, str] = field(default_factory=dict)
    """Pages that show the run, by name (`temporal_ui`: the workflow in Temporal's web UI)."""
    cancelled: bool = False
    """The run was stopped on purpose (Ctrl-C, SIGTERM, `framefarm cancel`): its jobs in flight
    are recorded CANCELLED and `framefarm resume` finishes it."""


@dataclass(frozen=True, kw_only=True)
class ResumeRequest:
    """Finish a planned run: render `chunks` (those without a verified segment), then encode.

    `env` is the job contract of the run (its storage, job log, run id and output, and the
    settings given to `resume`); `run` is its record in the job log.
    """

    run: RunRecord
    env: Mapping[str, str]
    chunks: tuple[int, ...]


ProgressCallback = Callable[[Progress], None]


class Runner(ABC):
    """Runs plan, then every render job, then encode, through the job contract."""

    name: str
    start_cost_seconds: float = 0.0
    """What starting one job costs this runner; the planner sizes chunks from it."""
    max_chunks: ClassVar[int] = 0
    """The most chunks one run can have on this runner (0: no limit of its own); the plan job
    gets it as FRAMEFARM_MAX_CHUNKS (`sizing_env`), sizes chunks within it and refuses more."""
    backend_reach: ClassVar[str] = "machine"
    """Who must be able to use the run's storage and job log (storage.REACHES): the processes
    of this machine (worker processes), or any machine (containers elsewhere)."""

    @classmethod
    def check_backends(cls, storage_url: str, joblog_url: str) -> None:
        """Refuse, before anything runs, storage or a job log that this runner's jobs cannot
        reach (UserError: one line naming them and the fix)."""
        from framefarm import joblog, storage

        short = [url for url, found in ((storage_url, storage.url_reach(storage_url)),
                                        (joblog_url, joblog.url_reach(joblog_url)))
                 if not storage.reaches(found, cls.backend_reach)]
        if short:
            raise UserError(cls.unreachable(short))

    @classmethod
    def unreachable(cls, urls: list[str]) -> str:
        """The line `check_backends` says for backends its jobs cannot reach."""
        del urls
        return (f"memory:// storage and job logs live in one process; {cls.name} worker "
                "processes cannot share them: use file:// and sqlite:/// (the defaults)")

    def sizing_env(self) -> dict[str, str]:
        """What the plan job needs of this runner to size chunks: the cost of starting a job
        and, when it has one, its chunk limit."""
        env = {config.JOB_START_SECONDS: str(self.start_cost_seconds)}
        if self.max_chunks:
            env[config.MAX_CHUNKS] = str(self.max_chunks)
        return env

    @abstractmethod
    def run(self, request: RunRequest, *, on_progress: ProgressCallback | None = None) -> RunResult:
        """Run the whole pipeline and return how it ended."""

    def resume(self, request: ResumeRequest, *,
               on_progress: ProgressCallback | None = None) -> RunResult:
        """Render the request's chunks of a planned run, then encode; how it ended."""
        raise UserError(f"the {self.name} runner cannot resume runs")

    def cancel(self, run: RunRecord, *, joblog: JobLog) -> str:
        """Stop the run's driver and jobs wherever they run, and record its unfinished attempts
        CANCELLED; a few words saying what was stopped. The caller has already marked the run
        cancelled in the job log."""
        raise UserError(f"the {self.name} runner cannot cancel runs")

    def settings(self) -> dict[str, str]:
        """What resume and cancel need to rebuild this runner for a run (kept in its record)."""
        return {}

    @classmethod
    def job_statuses(cls, run: RunRecord, *, chunks: int) -> dict[str, dict[str, str]]:
        """What the runner itself says of the run's jobs, beside the job log (`framefarm
        status`): job name -> status, reason and the runner's id of the job. Only a runner
        whose jobs can end without writing to the job log (a container never started, a
        queue that refused it) has more to say than the job log."""
        del run, chunks
        return {}

    @classmethod
    def engine_view(cls, run: RunRecord) -> dict[str, str]:
        """What the workflow engine that drives the run says of it (`framefarm status`): an
        AWS Step Functions execution's ARN, status and page; {} for a runner without one."""
        del run
        return {}

    @classmethod
    def reopen(cls, settings: Mapping[str, str], **options: Any) -> Runner:
        """The runner a run was started with, from its recorded `settings`; `options` (flags
        given to resume or cancel) win."""
        return cls(**options)


_backends: dict[tuple[int, str, str], tuple[Storage, JobLog]] = {}


def process_backends(env: Mapping[str, str]) -> tuple[Storage, JobLog]:
    """The storage and job log `env` names, opened once per process and reused by every job it
    runs (a local or Temporal worker's); a forked child opens its own."""
    key = (os.getpid(), env[config.STORAGE], env[config.JOBLOG])
    if key not in _backends:
        _backends[key] = (open_storage(key[1]), open_joblog(key[2]))
    return _backends[key]
