"""Render: draw one chunk's frames and encode them straight into an H.264 segment in storage."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from framefarm import tracing
from framefarm._frames import png_bytes
from framefarm._locations import sketch_location_kind
from framefarm.errors import UserError
from framefarm.integrity import file_digest
from framefarm.kinds import draws_threaded
from framefarm.model import Chunk, Plan
from framefarm.sketch import FrameSource
from framefarm.steps._drawing import Drawers, DrawerSketch
from framefarm.steps._keys import frame_key, segment_key
from framefarm.steps._sources import fetch_to_local, frame_source
from framefarm.steps.plan import read_plan_and_hash
from framefarm.storage import Storage
from framefarm.video import SegmentWriter, scratch_file, segment_keyint

ENCODER_THREADS = 2
"""The most x264 threads one segment's encoder gets. Each thread more makes the file larger at
the same crf (x264 encodes frames in parallel with less of each other's statistics): at 720p,
8 threads cost 6% on examples/plasma.py and 48% on examples/tracker.py against 2, and 1 thread
saves 1.5% and 7%. More CPUs go to drawing, and to more segments when the video is long
enough."""


@dataclass(frozen=True, kw_only=True)
class RenderRequest:
    """Render chunk `index` of run `run_id`."""

    run_id: str
    index: int
    cpus: int = 0
    """CPUs this job may use (0: unknown). With 2 or more the sketch draws in that many
    processes (steps/_drawing.py) and the encoder runs up to ENCODER_THREADS threads; with one
    or unknown, this process draws and the encoder takes 1 thread (0: x264's choice)."""


@dataclass(frozen=True, kw_only=True)
class RenderResult:
    """What a render job produced."""

    index: int
    start: int
    stop: int
    segment: str
    frames: int
    seconds: float
    sha256: str = ""
    """The segment's SHA-256 and size, and the hash of the plan it was rendered for."""
    bytes: int = 0
    plan_hash: str = ""


def run_render(request: RenderRequest, *, storage: Storage,
               on_frame: Callable[[int], None] | None = None,
               on_chunk: Callable[[Chunk], None] | None = None) -> RenderResult:
    """Render the chunk's frames in order into a segment; `on_chunk(chunk)` once the plan is
    read, `on_frame(done)` after each frame."""
    began = time.perf_counter()
    plan, digest = read_plan_and_hash(request.run_id, storage)
    if not 0 <= request.index < plan.size:
        raise UserError(f"chunk {request.index} is outside run {plan.run_id}'s plan of {plan.size} "
                        f"chunks (0-{plan.size - 1}): check AWS_BATCH_JOB_ARRAY_INDEX")
    chunk = plan.chunk(request.index)
    if on_chunk is not None:
        on_chunk(chunk)
    video = plan.video
    tracing.current_span().set_attributes({"framefarm.frame_start": chunk.start,
                                           "framefarm.frame_stop": chunk.stop})
    tracer = tracing.tracer()
    # More CPUs than frames help nobody: a 1-frame chunk neither starts drawers nor encoder
    # threads that would have nothing to do.
    cpus = min(request.cpus, len(chunk)) if request.cpus > 0 else request.cpus
    if draws_threaded(plan.sketch):  # its renderer threads itself (Cycles) on the job's CPUs
        cpus = min(cpus, 1)
    threads = min(cpus, ENCODER_THREADS) if cpus > 1 else cpus
    keep = (storage.url, plan.run_id) if plan.keep_frames else None
    clock = time.perf_counter
    source: FrameSource | None = None
    if cpus <= 1:  # this process draws: the sketch is set up here, once per process
        source = frame_source(plan.sketch, storage=storage, width=video.width,
                              height=video.height, rate=video.rate,
                              total_frames=plan.total_frames, display_name=plan.sketch_name)
    tmp = scratch_file(".mp4")
    drawers: Drawers | None = None
    try:
        if source is None:  # the drawers start now and open the sketch themselves, while this
            # process opens the encoder; they end with the chunk (their CPU time is the job's)
            drawers = Drawers(_drawer_sketch(plan, storage), cpus, keep=keep)
        with SegmentWriter(tmp, video=video, threads=threads,
                           keyint=segment_keyint(plan.frames_per_job)) as writer:
            if drawers is not None:
                for done, drawn in enumerate(drawers.draw(chunk.frames), start=1):
                    with tracer.start_as_current_span("frame") as span:
                        encoded = clock()
                        writer.write_yuv(drawn.image)
                        span.set_attributes({"framefarm.frame": drawn.frame,
                                             "framefarm.render_seconds": drawn.draw_seconds,
                                             "framefarm.convert_seconds": drawn.convert_seconds,
                                             "framefarm.encode_seconds": clock() - encoded})
                    if on_frame is not None:
                        on_frame(done)
            if source is not None:
                for done, frame in enumerate(chunk.frames, start=1):
                    with tracer.start_as_current_span("frame") as span:
                        drawn_at = clock()
                        pixels = source.frame(frame)
                        encoded = clock()
                        writer.write(pixels)
                        span.set_attributes({"framefarm.frame": frame,
                                             "framefarm.render_seconds": encoded - drawn_at,
                                             "framefarm.encode_seconds": clock() - encoded})
                        if plan.keep_frames:
                            _store_png(storage, frame_key(plan.run_id, frame), pixels)
                    if on_frame is not None:
                        on_frame(done)
            flush = tracer.start_span("flush")  # the encoder drains its look-ahead: encode time
        flush.end()
        key = segment_key(plan.run_id, chunk.index)
        sha, size = file_digest(tmp)
        storage.put_file(key, tmp, expires=True)  # the video outlives its segments
    finally:
        if drawers is not None:
            drawers.close()
        tmp.unlink(missing_ok=True)
    return RenderResult(index=chunk.index, start=chunk.start, stop=chunk.stop, segment=key,
                        frames=len(chunk), seconds=time.perf_counter() - began, sha256=sha,
                        bytes=size, plan_hash=digest)


def _drawer_sketch(plan: Plan, storage: Storage) -> DrawerSketch:
    """The plan's sketch as drawers open it: a stored sketch is fetched here once, and the
    drawers read its local copy."""
    video = plan.video
    local = (str(fetch_to_local(plan.sketch, storage))
             if sketch_location_kind(plan.sketch) == "url" else "")
    return DrawerSketch(location=plan.sketch, local_file=local, display_name=plan.sketch_name,
                        width=video.width, height=video.height, rate=video.rate,
                        total_frames=plan.total_frames)


def _store_png(storage: Storage, key: str, pixels: np.ndarray) -> None:
    storage.put_bytes(key, png_bytes(pixels))
