"""What the workflows, activities and starter exchange: one dataclass in and one out per activity
and workflow (plain data, so a field with a default can be added later), and the numbers that
size them. Pure: imported inside Temporal's workflow sandbox.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PLAN_WORKFLOW = "FramefarmRun"
CHUNKS_WORKFLOW = "FramefarmChunks"
PROGRESS_QUERY = "progress"

CHUNKS_PER_WORKFLOW = 1_000
"""Render activities one workflow runs itself; a bigger range fans out to child workflows.

Measured: a run of 1,000 one-frame chunks has 5,903 events and 1.4 MB of history — about 6
events a chunk (the activity's scheduled, started and completed, and the workflow task that
takes its result) and 1.4 KB (its input is the job contract). That stays well below the 10,240
events / 10 MB where Temporal starts warning, the 51,200 events / 50 MB where it terminates a
workflow, and its 2,000 pending activities per workflow. A child workflow costs its parent about
what an activity does, so 1,000 children of 1,000 chunks each hold a million chunks (a
billion with one more level), no history past a thousand of them.
"""
MAX_FAILURES_KEPT = 100
"""Failed jobs a workflow reports in full (their errors hold sketch tracebacks)."""

DEFAULT_HEARTBEAT_SECONDS = 30.0
"""How long a render job may go without finishing a frame (the sketch's setup counts with its
first frame) before Temporal gives its chunk to another worker."""
MAX_ATTEMPTS = 3
"""Attempts per job, as on AWS Batch; a user error (a sketch error included) is never retried."""
PLAN_TIMEOUT_SECONDS = 600.0
"""The plan job loads the sketch and renders one probe frame; nothing to derive it from yet."""
ENCODE_TIMEOUT_SECONDS = 600.0
ENCODE_SECONDS_PER_CHUNK = 1.0
"""The encode job fetches and joins one segment per chunk: its timeout grows with the plan."""


def render_timeout(frames_per_job: int, heartbeat_seconds: float) -> float:
    """A render job's start-to-close timeout: every frame of its chunk may take up to a
    heartbeat timeout (the first one with the sketch's setup), plus the segment's upload."""
    return heartbeat_seconds * (frames_per_job + 2)


def encode_timeout(chunks: int) -> float:
    """The encode job's start-to-close timeout for a plan of `chunks` chunks."""
    return ENCODE_TIMEOUT_SECONDS + ENCODE_SECONDS_PER_CHUNK * chunks


def chunk_frames(index: int, *, total_frames: int, frames_per_job: int) -> int:
    """Frames in chunk `index` of a plan (the last one may be short)."""
    start = index * frames_per_job
    return max(0, min(start + frames_per_job, total_frames) - start)


def fan_out_size(chunks: int, per_workflow: int = CHUNKS_PER_WORKFLOW) -> int:
    """Chunks each child workflow takes when a range of `chunks` is more than one workflow
    runs itself: the smallest power of `per_workflow` that needs at most `per_workflow`
    children (1 when no fan-out is needed)."""
    piece = 1
    while piece * per_workflow < chunks:
        piece *= per_workflow
    return piece


@dataclass
class JobFailure:
    """A job that failed for good: what the user sees, as `framefarm job` would report it."""

    job: str
    index: int | None = None
    exit_code: int = 1
    error: str = ""


@dataclass
class JobInput:
    """One job: the job contract (JOB_TYPE, the index and the attempt are added per job)."""

    env: dict[str, str]
    index: int | None = None
    attempt_base: int = 0
    """Attempts this run's jobs made before this workflow (a failed run started again): the
    job log's attempt is this plus Temporal's."""


@dataclass
class PlanOutput:
    """What the plan job decided."""

    run_id: str
    chunks: int
    total_frames: int
    frames_per_job: int
    output: str = ""
    width: int = 0
    height: int = 0
    fps: str = ""


@dataclass
class RenderOutput:
    """One rendered chunk."""

    index: int
    frames: int
    segment: str = ""
    seconds: float = 0.0


@dataclass
class EncodeOutput:
    """The finished video."""

    output: str
    frames: int
    bytes: int = 0
    seconds: float = 0.0


@dataclass
class RunInput:
    """One run: the job contract for every job, and how patient to be with workers."""

    env: dict[str, str]
    attempt_base: int = 0
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS
    chunks_per_workflow: int = CHUNKS_PER_WORKFLOW
    chunks: list[int] | None = None
    """A resumed run: render only these chunks of `plan` (no plan job), then encode."""
    plan: PlanOutput | None = None
    """The resumed run's plan (with `chunks`)."""


@dataclass
class RunOutput:
    """A finished run: its plan and its video."""

    run_id: str
    plan: PlanOutput
    encode: EncodeOutput


@dataclass
class ChunksInput:
    """Render chunks [start, stop) of a planned run (a child workflow's share of a big run)."""

    run: RunInput
    start: int
    stop: int
    frames_per_job: int
    indexes: list[int] | None = None
    """A resumed run's chunks at positions [start, stop), in order (None: position i is chunk i)."""


@dataclass
class ChunksOutput:
    """How a range of chunks went: failures in full up to MAX_FAILURES_KEPT, then counted."""

    chunks_done: int = 0
    frames_done: int = 0
    failed: int = 0
    failures: list[JobFailure] = field(default_factory=list)


@dataclass
class RunProgress:
    """A workflow's answer to the progress query: its finished chunks and frames (those of
    finished child workflows included) and the child workflows still running, to ask in turn."""

    phase: str = "plan"
    total_frames: int = 0
    chunks: int = 0
    chunks_done: int = 0
    frames_done: int = 0
    children: list[str] = field(default_factory=list)
