"""`--per-job auto`: how many frames each render job gets when the user does not say.

The rule, with t the probe's seconds per frame (sketch + an x264 estimate), N frames, P jobs
that can run at once and S what starting one job costs the runner:

1. segments only as short as the video's size allows. A segment starts with a key frame, and a
   key frame is many times a predicted frame's size. Segments of KEYINT frames (x264's own
   key-frame interval, 250) or more are free: one long encode of the same frames has as many
   key frames, so floor(N / KEYINT) chunks, and one for a shorter video, are always allowed.
   More (up to one per job that can run at once, each at least MIN_SEGMENT_FRAMES long) only
   when the user gives a size budget (FRAMEFARM_SIZE_BUDGET, `--size-budget`) and the
   key-frame probe says their extra key frames add at most that share of the video's bytes:
   on moving pictures (plasma) a key frame costs a few predicted frames, on a near-static
   picture (a plot, a tracker dot) dozens. A core that has no segment of its own draws frames
   for one that has (steps/_drawing.py);
2. a chunk must run at least max(MIN_CHUNK_SECONDS, START_COST_FACTOR * S), so starting jobs
   costs at most about a tenth of the work: at most floor(N * t / that) chunks;
3. with P known, at most CHUNKS_PER_WORKER * P chunks, and above P a multiple of P, so the
   last round of chunks keeps every worker busy;
4. never more chunks than the runner takes in one run (FRAMEFARM_MAX_CHUNKS, which the runner
   sets: AWS Batch's array limit, 10,000; none on one machine or on Temporal);
5. frames per job = ceil(N / chunks).

On one machine rule 1 decides: a 240-frame video is one segment, drawn by every worker; with a
size budget of 2% a moving one (plasma) is a segment per worker, a near-static one still one.
On AWS Batch (S ≈ 20 s) rule 2 makes chunks of 3-5 minutes. The probe frame that measures t
is only rendered when rule 2 could decide (`needs_probe`): x264's time alone bounds t from
below. The key-frame probe (two frames encoded, `KeyCost`) only runs when there is a size
budget and more segments than rule 1's free ones could be allowed (`needs_key_probe`). The
estimate errs high (plasma: +0.9% predicted per extra segment, +0.35% measured).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from framefarm.video import KEYINT

MIN_CHUNK_SECONDS = 0.25
START_COST_FACTOR = 10.0
CHUNKS_PER_WORKER = 4
MIN_SEGMENT_FRAMES = 60
"""The shortest segment rule 1 makes beyond its free ones: x264 restarts its look-ahead and rate
control with every segment, which a key-frame probe does not see."""


@dataclass(frozen=True)
class KeyCost:
    """What the key-frame probe measured: two consecutive frames encoded at the run's settings."""

    key_bytes: int
    """The first, a key frame."""
    frame_bytes: int
    """The second, predicted from it."""

    def extra_share(self, total_frames: int) -> float:
        """About what one extra segment adds to the video's bytes: its key frame in place of a
        predicted frame, over a video of one key frame and predicted frames."""
        extra = max(self.key_bytes - self.frame_bytes, 0)
        video = self.key_bytes + (total_frames - 1) * max(self.frame_bytes, 1)
        return extra / max(video, 1)

# libx264 CPU seconds per megapixel of frame on one core, by preset (measured on a 2-core
# x86-64 machine at crf 18 on examples/plasma.py), plus the RGB -> YUV conversion.
_X264_SECONDS_PER_MEGAPIXEL = {
    "ultrafast": 0.003, "superfast": 0.008, "veryfast": 0.014, "faster": 0.022, "fast": 0.027,
    "medium": 0.029, "slow": 0.038, "slower": 0.08, "veryslow": 0.2, "placebo": 0.6,
}
_CONVERT_SECONDS_PER_MEGAPIXEL = 0.003


def estimate_frame_seconds(render_seconds: float, *, width: int, height: int, preset: str) -> float:
    """CPU seconds one frame costs: the sketch's measured time plus conversion and x264."""
    megapixels = width * height / 1e6
    encode = _X264_SECONDS_PER_MEGAPIXEL.get(preset, 0.03) + _CONVERT_SECONDS_PER_MEGAPIXEL
    return max(render_seconds, 0.0) + encode * megapixels


_FREE_KEYS = KeyCost(key_bytes=0, frame_bytes=0)
"""Key frames that cost nothing: the most segments rule 1 could ever allow."""


def _free_segments(total_frames: int) -> int:
    """Segments no shorter than KEYINT: as many key frames as one long encode has."""
    return max(1, total_frames // KEYINT)


def _segment_cap(total_frames: int, parallelism: int, key_cost: KeyCost | None,
                 size_budget: float) -> int:
    """The most segments rule 1 allows."""
    free = _free_segments(total_frames)
    if key_cost is None or parallelism <= free or size_budget <= 0:
        return free
    share = key_cost.extra_share(total_frames)
    extra = math.floor(size_budget / share) if share > 0 else parallelism
    return max(free, min(free + extra, parallelism, total_frames // MIN_SEGMENT_FRAMES))


def _chunk_caps(total_frames: int, parallelism: int, key_cost: KeyCost | None,
                max_chunks: int, size_budget: float = 0.0) -> int:
    """The most chunks rules 1, 3 and 4 allow, before the frames' time is known."""
    chunks = _segment_cap(total_frames, parallelism, key_cost, size_budget)
    if parallelism > 0:
        chunks = min(chunks, CHUNKS_PER_WORKER * parallelism)
    return min(chunks, max_chunks) if max_chunks > 0 else chunks


def _min_chunk_seconds(start_cost: float) -> float:
    return max(MIN_CHUNK_SECONDS, START_COST_FACTOR * start_cost)


def needs_probe(*, total_frames: int, width: int, height: int, preset: str, parallelism: int,
                start_cost: float, max_chunks: int = 0, size_budget: float = 0.0) -> bool:
    """Whether rule 2 could cut the chunk count, so the frames' time must be measured."""
    fastest = estimate_frame_seconds(0.0, width=width, height=height, preset=preset)
    by_time = math.floor(total_frames * fastest / _min_chunk_seconds(start_cost))
    return by_time < _chunk_caps(total_frames, parallelism, _FREE_KEYS, max_chunks, size_budget)


def needs_key_probe(*, total_frames: int, parallelism: int, frame_seconds: float | None,
                    start_cost: float, max_chunks: int = 0, size_budget: float = 0.0) -> bool:
    """Whether rule 1 could allow more segments than its free ones, were key frames cheap."""
    if size_budget <= 0:
        return False
    free = _free_segments(total_frames)
    most = min(parallelism, total_frames // MIN_SEGMENT_FRAMES)
    if max_chunks > 0:
        most = min(most, max_chunks)
    if frame_seconds is not None:
        most = min(most, math.floor(total_frames * frame_seconds / _min_chunk_seconds(start_cost)))
    return most > free


def auto_frames_per_job(*, total_frames: int, frame_seconds: float | None, parallelism: int,
                        start_cost: float, key_cost: KeyCost | None = None,
                        max_chunks: int = 0, size_budget: float = 0.0) -> int:
    """Frames per render job by the rule in this module's docstring; `frame_seconds` None when
    `needs_probe` said rule 2 cannot decide, `key_cost` None when `needs_key_probe` said more
    segments cannot be allowed (or none was measured); `max_chunks` the runner's own limit
    (0: none); `size_budget` the share of bytes extra key frames may add (0: none)."""
    chunks = _chunk_caps(total_frames, parallelism, key_cost, max_chunks, size_budget)
    if frame_seconds is not None:
        by_time = math.floor(total_frames * frame_seconds / _min_chunk_seconds(start_cost))
        chunks = min(chunks, max(1, by_time))
    if parallelism > 0 and chunks > parallelism:
        chunks -= chunks % parallelism
    return math.ceil(total_frames / chunks)


# Memory of a render job, measured at 1280x720 (VmHWM of a process encoding 80 frames): Python,
# NumPy and PyAV take 45 MB; x264 holds its look-ahead and reference frames, 156 MB at preset
# fast (30 look-ahead frames), 94 MB with 10: about 3.4 bytes per pixel per look-ahead frame plus
# 20 frames' worth. A second thread adds 2 MB. A drawer starts from the job's forkserver, which
# preloaded framefarm, NumPy and PyAV (shared pages): what it adds is its sketch and its slots.
_PROCESS_BYTES = 48 << 20
_X264_BYTES_PER_PIXEL_FRAME = 3.4
_LOOKAHEAD = {"ultrafast": 0, "superfast": 0, "veryfast": 10, "faster": 20, "fast": 30,
              "medium": 40, "slow": 50}
_DRAWER_BYTES, _DRAWER_BYTES_PER_PIXEL = 24 << 20, 16


def encoder_memory(*, width: int, height: int, preset: str) -> int:
    """About how many bytes one render job's process takes at this size and preset."""
    frames = _LOOKAHEAD.get(preset, 60) + 20
    return _PROCESS_BYTES + int(width * height * _X264_BYTES_PER_PIXEL_FRAME * frames)


def drawer_memory(*, width: int, height: int) -> int:
    """About how many bytes one drawing process adds to its job's."""
    return _DRAWER_BYTES + width * height * _DRAWER_BYTES_PER_PIXEL
