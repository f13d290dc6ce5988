"""framefarm's data model: frozen, JSON-safe dataclasses shared by steps, runners and backends."""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from fractions import Fraction
from itertools import chain
from typing import Any, Literal

JobKind = Literal["plan", "render", "encode"]
JOB_KINDS: tuple[JobKind, ...] = ("plan", "render", "encode")

# AWS Batch's status names, in the order a job moves through them, and CANCELLED (a job stopped
# on purpose: Ctrl-C, `framefarm cancel`). A status never goes backwards.
STATUSES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED",
            "CANCELLED")
TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})

_RANK = {status: rank for rank, status in enumerate(STATUSES)}


def status_rank(status: str) -> int:
    """Position of `status` in a job's life; the final statuses share the last rank."""
    return min(_RANK[status], _RANK["SUCCEEDED"])


def can_move(old: str, new: str) -> bool:
    """True when a job may go from `old` to `new`: forwards only, never out of a final status."""
    if old in TERMINAL_STATUSES:
        return False
    return status_rank(new) > status_rank(old)


def parse_fps(text: str | float | int | Fraction) -> Fraction:
    """Frames per second as an exact fraction: "30", "29.97", "30000/1001" or a number."""
    value = Fraction(str(text)) if not isinstance(text, Fraction) else text
    if value.denominator != 1 and "/" not in str(text):
        # 29.97, 23.976, 59.94 ... are the NTSC rates N*1000/1001, written short.
        ntsc = round(value * Fraction(1001, 1000))
        if ntsc and abs(value * Fraction(1001, 1000) - ntsc) < Fraction(1, 100):
            return Fraction(ntsc * 1000, 1001)
        value = value.limit_denominator(1001)
    return value


@dataclass(frozen=True, kw_only=True)
class VideoSettings:
    """How the video is encoded: size, frame rate and x264 settings."""

    width: int
    height: int
    fps: str = "30"
    crf: int = 18
    preset: str = "fast"

    @property
    def rate(self) -> Fraction:
        """The frame rate as an exact fraction."""
        return parse_fps(self.fps)


@dataclass(frozen=True)
class Chunk:
    """One mini-batch: frames [start, stop), rendered by render job `index`."""

    index: int
    start: int
    stop: int

    @property
    def frames(self) -> range:
        """The frame indices of this chunk."""
        return range(self.start, self.stop)

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True, kw_only=True)
class Plan:
    """The whole run: which frames each render job draws, with what sketch and settings.

    Every chunk is `frames_per_job` frames but the last, which holds what is left: chunk i is
    frames [i*K, min((i+1)*K, N)). So chunks are derived from `total_frames` and
    `frames_per_job`, never stored one by one: a plan of a million chunks costs the same to
    build, store and read as a plan of ten, and any chunk is found in O(1).
    """

    run_id: str
    sketch: str
    total_frames: int
    frames_per_job: int
    video: VideoSettings
    output: str = ""
    keep_frames: bool = False
    created_at: str = ""
    sketch_name: str = ""
    """The sketch as the user named it (its path), for messages and tracebacks."""
    sketch_mode: str = ""
    """What the sketch's kind said of it when planned (an animation: "stateless" or
    "stateful"); left out of plan.json when empty."""

    @property
    def size(self) -> int:
        """Number of render jobs: ceil(total_frames / frames_per_job)."""
        return math.ceil(self.total_frames / self.frames_per_job)

    def chunk(self, index: int) -> Chunk:
        """Render job `index`'s frames."""
        if not 0 <= index < self.size:
            raise IndexError(f"chunk {index} is outside this plan's 0..{self.size - 1}")
        start = index * self.frames_per_job
        return Chunk(index, start, min(start + self.frames_per_job, self.total_frames))

    def chunks(self) -> Iterator[Chunk]:
        """Every chunk, in order."""
        k, n = self.frames_per_job, self.total_frames
        return (Chunk(i, start, min(start + k, n)) for i, start in enumerate(range(0, n, k)))

    def to_dict(self, *, chunks: bool = False) -> dict[str, Any]:
        """A JSON-safe dict of the plan's numbers (and `size`, the chunk count, for people);
        with `chunks`, also every chunk's [start, stop) (what plan.json held before: a million
        chunks make 15 MB of it, so plan.json no longer does)."""
        data = asdict(self)
        if not self.sketch_mode:
            del data["sketch_mode"]
        data["size"] = self.size
        if chunks:
            data["chunks"] = [[c.start, c.stop] for c in self.chunks()]
        return data

    def to_json(self) -> str:
        """plan.json's text: a few hundred bytes, however many chunks."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """Read a plan back from `to_dict`'s output (extra keys are ignored).

        Its frame counts must be above 0, and a `size` or (in plan.json before plans were stored
        by their numbers) a list of every chunk's [start, stop) must agree with them:
        ValueError otherwise.
        """
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["video"] = VideoSettings(**data["video"])
        plan = cls(**values)
        if not (plan.total_frames > 0 and plan.frames_per_job > 0):
            raise ValueError(f"its total_frames {plan.total_frames!r} and frames_per_job "
                             f"{plan.frames_per_job!r} must be above 0")
        if "size" in data and data["size"] != plan.size:
            raise ValueError(f"its size {data['size']!r} is not the {plan.size} chunks of "
                             f"{plan.total_frames} frames by {plan.frames_per_job}")
        if "chunks" in data:
            plan._check_listed(data["chunks"])
        return plan

    def _check_listed(self, listed: object) -> None:
        """An older plan.json's chunk list must be the chunks this plan derives."""
        k, n = self.frames_per_job, self.total_frames
        # Compared pair by pair in C, nothing kept: a million chunks take ~0.1 s and no memory.
        derived = map(list, zip(range(0, n, k), chain(range(k, n, k), (n,)), strict=True))
        if not (isinstance(listed, list) and len(listed) == self.size
                and all(map(operator.eq, listed, derived))):
            raise ValueError(f"its list of chunks is not the {self.size} chunks of {n} frames "
                             f"by {k}")

    @classmethod
    def from_json(cls, text: str | bytes) -> Plan:
        """Read plan.json (either form: by its numbers, or an older one listing every chunk)."""
        return cls.from_dict(json.loads(text))


def job_name(kind: JobKind, index: int | None = None) -> str:
    """The job's name in the job log: `plan`, `render:{i}` or `encode`."""
    return f"render:{index}" if kind == "render" else kind


@dataclass(frozen=True, kw_only=True)
class JobRecord:
    """One attempt of one job, as the job log keeps it."""

    run_id: str
    job: str
    kind: JobKind
    index: int | None = None
    attempt: int = 1
    status: str = "SUBMITTED"
    submitted_at: str = ""
    started_at: str = ""
    stopped_at: str = ""
    host: str = ""
    frames: int = 0
    outputs: tuple[str, ...] = ()
    error: str = ""
    trace_id: str = ""
    runner_id: str = ""
    heartbeat_at: str = ""
    """When the running attempt last said it is alive (every few seconds, best effort)."""
    sha256: str = ""
    """A render attempt's segment: its SHA-256, byte size and the hash of the plan it rendered."""
    bytes: int = 0
    plan_hash: str = ""
    exit_code: int = 0
    """How a failed attempt's own process said it ended: 2 bad input or a sketch error (a
    retry will not help), 1 a fault a retry may fix; 0 otherwise, or when it could not say
    (killed)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        # Every field is a str, an int or `outputs`, so a shallow copy does: asdict's deep
        # copy took ~20 us a record, ~18 s of `framefarm status` of a million chunks.
        data = {name: getattr(self, name) for name in _JOB_FIELDS}
        data["outputs"] = list(self.outputs)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobRecord:
        """Read a record back from `to_dict`'s output."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["outputs"] = tuple(values.get("outputs") or ())
        return cls(**values)

    def evolve(self, **changes: Any) -> JobRecord:
        """A copy with `changes` applied."""
        return replace(self, **changes)


_JOB_FIELDS = tuple(f.name for f in fields(JobRecord))


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """One run as the job log keeps it: its plan (how jobs pass data) and where the video went."""

    run_id: str
    created_at: str = ""
    plan: Mapping[str, Any] = field(default_factory=dict)
    output: str = ""
    runner_ids: Mapping[str, str] = field(default_factory=dict)
    """The runner's own ids for the run's jobs, e.g. AWS Batch's render array and encode job."""
    runner: str = ""
    """Who drives the run: local, batch or temporal (resume and cancel ask it)."""
    settings: Mapping[str, str] = field(default_factory=dict)
    """The runner's settings that resume and cancel need (a queue, a server address)."""
    cancelled_at: str = ""
    """When the run was cancelled; its status is CANCELLED from then on."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        return {"run_id": self.run_id, "created_at": self.created_at,
                "plan": dict(self.plan), "output": self.output,
                "runner_ids": dict(self.runner_ids), "runner": self.runner,
                "settings": dict(self.settings), "cancelled_at": self.cancelled_at}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRecord:
        """Read a run back from `to_dict`'s output."""
        return cls(run_id=data["run_id"], created_at=data.get("created_at", ""),
                   plan=data.get("plan") or {}, output=data.get("output", ""),
                   runner_ids=data.get("runner_ids") or {}, runner=data.get("runner", ""),
                   settings=data.get("settings") or {},
                   cancelled_at=data.get("cancelled_at", ""))


@dataclass(frozen=True, kw_only=True)
class Lease:
    """Who drives a run now: one holder at a time, renewed by its heartbeat until `expires_at`."""

    run_id: str
    token: str
    host: str
    pid: int
    since: str
    expires_at: float
    """Epoch seconds after which the lease is stale and may be taken over."""

    def describe(self) -> str:
        """The holder, for messages: `pid 123 on host h since 2026-…`."""
        return f"pid {self.pid} on {self.host} since {self.since}"


@dataclass(frozen=True, kw_only=True)
class JobOutcome:
    """How a job ended; plain data, so it crosses process boundaries without pickling errors."""

    job: str
    run_id: str
    succeeded: bool
    index: int | None = None
    exit_code: int = 0
    error: str = ""
    result: Mapping[str, Any] = field(default_factory=dict)
