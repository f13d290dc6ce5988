"""The Runner interface: a runner decides when and where each job of a run starts; it hands every
job the job contract's variables and knows nothing of pixels."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from framefarm.model import JobOutcome


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
    details: Mapping[str, Any] = field(default_factory=dict)


ProgressCallback = Callable[[Progress], None]


class Runner(ABC):
    """Runs plan, then every render job, then encode, through the job contract."""

    name: str
    start_cost_seconds: float = 0.0
    """What starting one job costs this runner; the planner sizes chunks from it."""

    @abstractmethod
    def run(self, request: RunRequest, *, on_progress: ProgressCallback | None = None) -> RunResult:
        """Run the whole pipeline and return how it ended."""
