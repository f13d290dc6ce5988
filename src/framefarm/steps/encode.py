"""Encode: join every chunk's segment into the video without re-encoding, check it, store it."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from framefarm import tracing
from framefarm.errors import FramefarmError, UserError
from framefarm.integrity import SegmentDigest, check_segment
from framefarm.model import Plan
from framefarm.steps._keys import output_key, segment_key, segments_prefix
from framefarm.steps.plan import read_plan_and_hash
from framefarm.storage import Storage, open_storage
from framefarm.storage._base import copy_file_atomic
from framefarm.video import VideoCheck, concat_segments, inspect_video, scratch_file


@dataclass(frozen=True, kw_only=True)
class EncodeRequest:
    """Join run `run_id`'s segments; `output` overrides the plan's destination."""

    run_id: str
    output: str = ""
    expected: Mapping[int, SegmentDigest] | None = None
    """What each chunk's render job recorded of its segment: every segment is checked against
    it before joining (None: unchecked, for callers without a job log)."""


@dataclass(frozen=True, kw_only=True)
class EncodeResult:
    """The finished, checked video."""

    key: str
    output: str
    frames: int
    width: int
    height: int
    fps: str
    bytes: int
    seconds: float


class VideoCheckFailed(FramefarmError):
    """The joined video is not what the plan asked for."""


def missing_segments(plan: Plan, storage: Storage) -> list[int]:
    """Indices of chunks whose segment is not in storage."""
    present = set(storage.list(segments_prefix(plan.run_id)))
    return [c.index for c in plan.chunks() if segment_key(plan.run_id, c.index) not in present]


def check_video(check: VideoCheck, plan: Plan) -> None:
    """Raise VideoCheckFailed unless the video holds exactly the plan's frames, in order, at
    the plan's size and frame rate, and every key frame decodes."""
    info, video = check.info, plan.video
    problems = []
    if info.frames != plan.total_frames:
        problems.append(f"{info.frames} frames, expected {plan.total_frames}")
    elif sorted(check.positions) != list(range(plan.total_frames)):
        problems.append("frames out of place: timestamps are not 0..N-1 frame durations")
    if check.key_frames < plan.size or check.key_frames_decoded != check.key_frames:
        problems.append(f"{check.key_frames_decoded} of {check.key_frames} key frames decode "
                        f"(one should start each of {plan.size} segments)")
    if (info.width, info.height) != (video.width, video.height):
        problems.append(f"size {info.width}x{info.height}, expected {video.width}x{video.height}")
    if info.fps != video.rate:
        problems.append(f"{float(info.fps):.3f} fps, expected {float(video.rate):.3f}")
    if problems:
        raise VideoCheckFailed(f"run {plan.run_id}: the joined video has " + "; ".join(problems))


def run_encode(request: EncodeRequest, *, storage: Storage) -> EncodeResult:
    """Join the segments in plan order, check the video, store it and copy it to the output."""
    began = time.perf_counter()
    plan, digest = read_plan_and_hash(request.run_id, storage)
    missing = missing_segments(plan, storage)
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" …" if len(missing) > 10 else "")
        raise UserError(f"run {plan.run_id}: {len(missing)} of {plan.size} segments are missing "
                        f"(chunks {shown}): `framefarm resume {plan.run_id}` renders them")
    scratch: list[Path] = []
    joined = scratch_file(".mp4")
    try:
        parts = []
        for chunk in plan.chunks():
            key = segment_key(plan.run_id, chunk.index)
            local = storage.local_path(key)
            if local is None:
                local = storage.get_file(key, scratch_file(".mp4"))
                scratch.append(local)
            if request.expected is not None:
                check_segment(local, chunk=chunk, expected=request.expected.get(chunk.index),
                              plan=digest, key=key, run_id=plan.run_id)
            parts.append((local, chunk.start))
        with tracing.span("concat", {"framefarm.segments": len(parts)}):
            concat_segments(parts, joined, rate=plan.video.rate)
        with tracing.span("verify"):
            check = inspect_video(joined, rate=plan.video.rate)
            check_video(check, plan)
        info = check.info
        key = output_key(plan.run_id)
        storage.put_file(key, joined)
        output = request.output or plan.output
        if output:
            deliver(joined, output)
        size = joined.stat().st_size
    finally:
        joined.unlink(missing_ok=True)
        for path in scratch:
            path.unlink(missing_ok=True)
    return EncodeResult(key=key, output=output or storage.url_for(key), frames=info.frames,
                        width=info.width, height=info.height, fps=plan.video.fps, bytes=size,
                        seconds=time.perf_counter() - began)


def deliver(video: Path, output: str) -> None:
    """Copy the video to `output`, a local path or a storage URL, atomically."""
    if "://" in output and not output.startswith("file://"):
        parent, name = output.rsplit("/", 1)
        open_storage(parent).put_file(name, video)
    else:
        path = Path(output.removeprefix("file://")).expanduser()
        copy_file_atomic(video, path)
