"""Plan: split N frames into chunks of K, copy the sketch into storage, record the plan."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from framefarm import config, limits
from framefarm.errors import UserError
from framefarm.integrity import plan_hash
from framefarm.kinds import THREADED_KINDS
from framefarm.model import Plan, VideoSettings, parse_fps
from framefarm.sketch import FrameSource, Sketch, load_sketch
from framefarm.steps._keys import plan_key, sketch_key
from framefarm.steps._sizing import (
    KeyCost,
    auto_frames_per_job,
    estimate_frame_seconds,
    needs_key_probe,
    needs_probe,
)
from framefarm.steps._sources import fetch_to_local
from framefarm.storage import Storage
from framefarm.video import key_frame_cost

_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
            "veryslow", "placebo")


@dataclass(frozen=True, kw_only=True)
class PlanRequest:
    """What to render; None means: take the sketch's default, then framefarm's."""

    sketch: str
    run_id: str | None = None
    kind: str | None = None
    """The kind of creative code (framefarm/kinds/); None: the sketch file's suffix says."""
    assets: tuple[str, ...] = ()
    """Files and folders the sketch brings (--asset), beside those it declares (ASSETS)."""
    total_frames: int | None = None
    frames_per_job: int | None = None
    width: int | None = None
    height: int | None = None
    fps: str | None = None
    crf: int | None = None
    preset: str | None = None
    output: str = ""
    keep_frames: bool = False
    parallelism: int = 0
    """Jobs the runner can run at once (0: unknown); sizes chunks when none is given."""
    start_cost: float = 0.0
    """Seconds the runner needs to start one job; sizes chunks when none is given."""
    max_chunks: int = 0
    """The most chunks the runner takes in one run (0: no limit of its own)."""
    size_budget: float = 0.0
    """Percent the video may grow by (estimated) for chunks shorter than x264's key-frame
    interval when none is given (0: never)."""


def new_run_id() -> str:
    """A sortable, unique run id: date, time and a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def check_positive(name: str, value: object, *, frame_count: bool = True) -> int:
    """`value` as a positive integer, else a UserError naming `name`; a `frame_count` (frames,
    frames per job) is also at most limits.MAX_FRAMES."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise UserError(f"{name} must be a whole number above 0, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise UserError(f"{name} must be a whole number above 0, got {value!r}") from None
    if number <= 0:
        raise UserError(f"{name} must be a whole number above 0, got {value!r}")
    return limits.check_frames(name, number) if frame_count else number


def make_plan(*, run_id: str, sketch: str, total_frames: int, frames_per_job: int,
              video: VideoSettings, output: str = "", keep_frames: bool = False,
              sketch_name: str = "", sketch_mode: str = "") -> Plan:
    """The plan, a pure function: ceil(N / K) chunks, chunk i = frames [iK, min((i+1)K, N))."""
    total_frames = check_positive("frames", total_frames)
    frames_per_job = check_positive("frames per job", frames_per_job)
    return Plan(run_id=run_id, sketch=sketch, total_frames=total_frames,
                frames_per_job=frames_per_job, video=video, output=output,
                keep_frames=keep_frames, sketch_name=sketch_name, sketch_mode=sketch_mode,
                created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"))


def resolve_video(request: PlanRequest, sketch: Sketch) -> VideoSettings:
    """Video settings: the request's value, else the sketch's module default, else framefarm's."""
    d = sketch.defaults
    width = check_positive("width", request.width or d.width or config.DEFAULT_WIDTH,
                           frame_count=False)
    height = check_positive("height", request.height or d.height or config.DEFAULT_HEIGHT,
                            frame_count=False)
    if width % 2 or height % 2:
        raise UserError(
            f"size {width}x{height}: H.264 in yuv420p needs an even width and height; "
            f"use --size {width + width % 2}x{height + height % 2}")
    limits.check_frame_size(width, height, fix="use --size")
    fps_text = str(request.fps or d.fps or config.DEFAULT_FPS)
    try:
        rate = parse_fps(fps_text)
    except (ValueError, ZeroDivisionError):
        rate = None
    if rate is None or rate <= 0 or rate > 1000:
        raise UserError(f"fps {fps_text!r} is not a frame rate: use a number like 30 or 29.97")
    crf = config.DEFAULT_CRF if request.crf is None else request.crf
    if not 0 <= crf <= 51:
        raise UserError(f"crf {crf} is out of range: use 0 (lossless) to 51 (worst); 18 is default")
    preset = request.preset or config.DEFAULT_PRESET
    if preset not in _PRESETS:
        raise UserError(f"preset {preset!r} is not an x264 preset: use one of {', '.join(_PRESETS)}")
    return VideoSettings(width=width, height=height, fps=fps_text, crf=crf, preset=preset)


def store_sketch(sketch: Sketch, storage: Storage, *, assets: tuple[str, ...] = ()) -> str:
    """Copy a file sketch into storage by content hash (with its assets: a bundle); the URL
    render jobs load it from.

    A `module:function` sketch is an installed module, and a bundle already stored (by a
    remote runner) is where its jobs find it: both are passed on as they are.
    """
    from framefarm.assets import BUNDLES

    if sketch.source is None or f"/{BUNDLES}" in sketch.location:
        return sketch.location
    return store_sketch_file(Path(sketch.source), storage, kind=sketch.kind, assets=assets)


def store_sketch_file(path: Path, storage: Storage, *, kind: str | None = None,
                      assets: tuple[str, ...] = ()) -> str:
    """Copy a sketch file to sketches/{sha256}.py (once; a shader's .frag, so every job loads
    it as the kind it is: `kind`, else its suffix says) and return its storage URL; with
    assets (named, or declared by the sketch), the sketch and its assets as a bundle."""
    from framefarm.assets import asset_files, store_bundle
    from framefarm.kinds import kind_of, suffix_of

    suffix = suffix_of(kind_of(str(path), kind))
    files = asset_files(path, assets)
    if files:
        return store_bundle(path, files, storage, f"{path.name.split('.')[0]}{suffix}")
    data = path.read_bytes()
    key = sketch_key(hashlib.sha256(data).hexdigest(), suffix)
    if not storage.exists(key):
        storage.put_bytes(key, data)
    return storage.url_for(key)


def run_plan(request: PlanRequest, *, storage: Storage) -> Plan:
    """Load the sketch, settle every setting, store the sketch and plan.json; return the plan."""
    sketch = load_sketch(request.sketch, storage_loader=lambda url: fetch_to_local(url, storage),
                         kind=request.kind)
    total = request.total_frames or sketch.defaults.frames or config.DEFAULT_FRAMES
    total = check_positive("frames", total)
    video = resolve_video(request, sketch)
    mode = sketch.verify(video.width, video.height) if sketch.verify is not None else None
    per_job = request.frames_per_job or _auto_per_job(request, sketch, video, total)
    _check_chunk_count(total, per_job, request.max_chunks)
    plan = make_plan(run_id=request.run_id or new_run_id(),
                     sketch=store_sketch(sketch, storage, assets=request.assets),
                     total_frames=total, frames_per_job=per_job, video=video, output=request.output,
                     keep_frames=request.keep_frames,
                     sketch_name=str(sketch.source) if sketch.source else sketch.location,
                     sketch_mode=mode or "")
    storage.put_bytes(plan_key(plan.run_id), plan.to_json().encode())
    return plan


def _check_chunk_count(total: int, per_job: int, max_chunks: int) -> None:
    """More chunks than the runner takes is a UserError, before anything is stored."""
    chunks = -(-total // per_job)
    if max_chunks and chunks > max_chunks:
        raise UserError(f"{chunks} render jobs is more than the {max_chunks} this runner takes "
                        f"in one run: set {config.FRAMES_PER_RENDER_JOB} (--per-job) to "
                        f"{-(-total // max_chunks)} or more, or leave it to auto")


def _auto_per_job(request: PlanRequest, sketch: Sketch, video: VideoSettings, total: int) -> int:
    """Size chunks by the rule in steps/_sizing.py. When the frames' time matters, render one
    probe frame (the middle one, after setup) to measure it; when segments shorter than x264's
    key-frame interval could be allowed, encode it and the next to see what a key frame costs."""
    if total == 1:
        return 1
    parallelism, start_cost, most = request.parallelism, request.start_cost, request.max_chunks
    budget = request.size_budget / 100
    frame_seconds: float | None = None
    source: FrameSource | None = None
    probe: np.ndarray | None = None
    # A kind that fills a job's cores by itself (a Blender scene) has frames of tenths of a
    # second to minutes: measuring one would cost a whole frame to learn that chunks should
    # follow the workers.
    if sketch.kind not in THREADED_KINDS and needs_probe(
            total_frames=total, width=video.width, height=video.height, preset=video.preset,
            parallelism=parallelism, start_cost=start_cost, max_chunks=most, size_budget=budget):
        source = FrameSource(sketch, width=video.width, height=video.height, fps=video.rate,
                             total_frames=total)
        began = time.perf_counter()
        image = source.frame(total // 2)
        frame_seconds = estimate_frame_seconds(time.perf_counter() - began, width=video.width,
                                               height=video.height, preset=video.preset)
        probe = np.array(image)
    key_cost: KeyCost | None = None
    if needs_key_probe(total_frames=total, parallelism=parallelism, frame_seconds=frame_seconds,
                       start_cost=start_cost, max_chunks=most, size_budget=budget):
        if source is None:
            source = FrameSource(sketch, width=video.width, height=video.height, fps=video.rate,
                                 total_frames=total)
        if probe is None:
            probe = np.array(source.frame(total // 2))
        key_cost = KeyCost(*key_frame_cost(probe, source.frame(total // 2 + 1), video=video))
    return auto_frames_per_job(total_frames=total, frame_seconds=frame_seconds,
                               parallelism=parallelism, start_cost=start_cost, key_cost=key_cost,
                               max_chunks=most, size_budget=budget)


def read_plan(run_id: str, storage: Storage) -> Plan:
    """The plan a run's plan job stored."""
    return read_plan_and_hash(run_id, storage)[0]


def read_plan_and_hash(run_id: str, storage: Storage) -> tuple[Plan, str]:
    """The plan a run's plan job stored, and the hash of its plan.json (see integrity.py); a
    missing, corrupt or hand-edited plan.json is a UserError naming the file.

    plan.json holds the plan's numbers, so this costs the same for a million chunks as for one.
    An older plan.json also lists every chunk: it still reads (the list is checked against the
    numbers), and its hash is still that of its bytes, so the segments recorded for it verify.
    """
    key = plan_key(run_id)
    if not storage.exists(key):
        raise UserError(f"run {run_id!r} has no plan in {storage.url}: run the plan job first "
                        f"(or check FRAMEFARM_RUN_ID and FRAMEFARM_STORAGE)")
    data = storage.get_bytes(key)
    try:
        plan = Plan.from_json(data)
        if plan.run_id != run_id:
            raise ValueError(f"it names run {plan.run_id!r}")
        plan.chunk(plan.size - 1)
        make_plan(run_id=plan.run_id, sketch=plan.sketch, total_frames=plan.total_frames,
                  frames_per_job=plan.frames_per_job, video=plan.video)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, UserError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise UserError(f"the plan {storage.url_for(key)} is corrupt or was edited by hand "
                        f"({reason}): render the run again under a new --run-id") from None
    return plan, plan_hash(data)
