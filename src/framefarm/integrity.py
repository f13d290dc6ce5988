"""Segment integrity: what a render job records of the segment it wrote, and the check that
encode makes of every segment before joining it, so a corrupted, swapped or stale segment can
never reach the video. Pure: hashes files and compares; the job log is the caller's."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from framefarm.errors import SegmentRejected
from framefarm.model import Chunk

_BLOCK = 1 << 20


@dataclass(frozen=True, kw_only=True)
class SegmentDigest:
    """A segment as its render job recorded it."""

    sha256: str
    bytes: int
    frames: int
    plan_hash: str


def file_digest(path: Path) -> tuple[str, int]:
    """The file's SHA-256 (hex) and size, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def plan_hash(plan_json: bytes) -> str:
    """The hash that ties a segment to the plan it was rendered for: plan.json's SHA-256."""
    return hashlib.sha256(plan_json).hexdigest()


def describe_chunk(chunk: Chunk) -> str:
    """`chunk 3 (frames 30-39)`, for messages."""
    return f"chunk {chunk.index} (frames {chunk.start}-{chunk.stop - 1})"


def check_segment(path: Path, *, chunk: Chunk, expected: SegmentDigest | None, plan: str,
                  key: str, run_id: str) -> None:
    """Raise SegmentRejected unless the file at `path` is the segment `expected` describes, of
    this plan (hash `plan`), with the chunk's frame count."""
    what = f"run {run_id}: {describe_chunk(chunk)}: segment {key}"
    fix = f"`framefarm resume {run_id}` renders it again"
    if expected is None:
        raise SegmentRejected(f"{what} has no successful render job in the job log: {fix}",
                              index=chunk.index)
    if expected.plan_hash != plan:
        raise SegmentRejected(f"{what} was rendered for another plan (plan {expected.plan_hash[:12]}, "
                              f"now {plan[:12]}): {fix}", index=chunk.index)
    if expected.frames != len(chunk):
        raise SegmentRejected(f"{what} holds {expected.frames} frames, the chunk has {len(chunk)}: "
                              f"{fix}", index=chunk.index)
    sha, size = file_digest(path)
    if size != expected.bytes or sha != expected.sha256:
        raise SegmentRejected(f"{what} does not match what its render job wrote ({size} bytes, "
                              f"sha256 {sha[:12]}; recorded {expected.bytes} bytes, "
                              f"{expected.sha256[:12]}): it was changed or replaced; {fix}",
                              index=chunk.index)
