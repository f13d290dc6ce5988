"""`--per-job auto`: how many frames each render job gets when the user does not say.

The rule, with t the probe's seconds per frame (sketch + an x264 estimate), N frames, P jobs
that can run at once and S what starting one job costs the runner:

1. a chunk must run at least max(MIN_CHUNK_SECONDS, START_COST_FACTOR * S), so starting jobs
   costs at most about a tenth of the work: at most floor(N * t / that) chunks;
2. with P known, at most CHUNKS_PER_WORKER * P chunks: enough that the last chunks balance
   across workers (the straggler tail is about a quarter of one worker's share) while each
   segment stays long enough to compress well;
3. never more chunks than frames, nor than MAX_CHUNKS (AWS Batch's array limit);
4. frames per job = ceil(N / chunks).

On one machine (S ≈ 0.01 s) rule 2 decides unless the video is very short; on AWS Batch
(S ≈ 20 s) rule 1 makes chunks of 3-5 minutes.
"""

from __future__ import annotations

import math

MIN_CHUNK_SECONDS = 0.25
START_COST_FACTOR = 10.0
CHUNKS_PER_WORKER = 4
MAX_CHUNKS = 10_000

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


def auto_frames_per_job(*, total_frames: int, frame_seconds: float, parallelism: int,
                        start_cost: float) -> int:
    """Frames per render job by the rule in this module's docstring."""
    min_chunk = max(MIN_CHUNK_SECONDS, START_COST_FACTOR * start_cost)
    chunks = max(1, math.floor(total_frames * frame_seconds / min_chunk))
    if parallelism > 0:
        chunks = min(chunks, CHUNKS_PER_WORKER * parallelism)
    chunks = min(chunks, total_frames, MAX_CHUNKS)
    return math.ceil(total_frames / chunks)
