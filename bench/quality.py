"""Picture quality: luma PSNR of finished videos against the frames the sketch drew.

The sketch's RGB frames are converted to Y'CbCr 4:2:0 exactly as framefarm.video.SegmentWriter
converts them (BT.709 matrix, limited range, FFmpeg's swscale through PyAV); each video is
decoded, and its luma plane compared with that, frame by frame. PSNR is taken from the mean
squared error over every pixel of every frame (not the mean of per-frame PSNRs, which a few
perfect frames would inflate).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from bench.harness import Workload, frame_source

if TYPE_CHECKING:
    import av
    import numpy as np

PSNR_FLOOR = 35.0
"""Below this a video was not converted as framefarm converts (a BT.601 matrix on BT.709 frames
scores ~25 dB at crf 18; a right one ~45-50): the benchmark stops rather than compare it."""


def to_bt709_yuv(pixels: np.ndarray, *, threads: int | None = None) -> av.VideoFrame:
    """RGB(A) uint8 pixels as framefarm's encoder gets them: yuv420p, BT.709, limited range."""
    import av
    from av.video.reformatter import ColorRange, Colorspace

    fmt = "rgba" if pixels.shape[2] == 4 else "rgb24"
    frame = av.VideoFrame.from_ndarray(pixels, format=fmt)
    return frame.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709,
                          dst_color_range=ColorRange.MPEG, threads=threads)


def luma(frame: av.VideoFrame) -> np.ndarray:
    """A yuv420p frame's Y plane as a height x width array (line padding dropped)."""
    import numpy as np

    plane = frame.planes[0]
    rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, :plane.width]


def psnr(squared_error: int, samples: int) -> float:
    """PSNR in dB of 8-bit samples from their summed squared error (inf when identical)."""
    if squared_error == 0:
        return math.inf
    return 10 * math.log10(255 ** 2 * samples / squared_error)


def luma_psnr(work: Workload, videos: Mapping[str, str | Path]) -> dict[str, float]:
    """Each video's luma PSNR (dB) against `work`'s frames, the sketch drawing each frame once
    for all of them. Stops the benchmark when a video is not `work.width` x `work.height` yuv420p,
    has too few frames, or scores under PSNR_FLOOR."""
    import av
    import numpy as np

    source = frame_source(work)
    errors = dict.fromkeys(videos, 0)
    with contextlib.ExitStack() as stack:
        decoders = {}
        for name, path in videos.items():
            container = stack.enter_context(av.open(str(path)))
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            decoders[name] = container.decode(stream)
        for i in range(work.frames):
            expected = luma(to_bt709_yuv(source.frame(i))).astype(np.int64)
            for name, decoder in decoders.items():
                frame = next(decoder, None)
                if frame is None:
                    raise SystemExit(f"{name}: {videos[name]} has only {i} frames of {work.frames}")
                if (frame.format.name, frame.width, frame.height) != ("yuv420p", work.width,
                                                                      work.height):
                    raise SystemExit(f"{name}: {videos[name]} is {frame.width}x{frame.height} "
                                     f"{frame.format.name}, not {work.width}x{work.height} yuv420p")
                diff = (luma(frame).astype(np.int64) - expected).ravel()  # int64: no overflow
                errors[name] += int(np.dot(diff, diff))
    samples = work.frames * work.width * work.height
    found = {name: psnr(error, samples) for name, error in errors.items()}
    for name, db in found.items():
        if db < PSNR_FLOOR:
            raise SystemExit(f"{name}: luma PSNR {db:.1f} dB against the sketch's frames: its "
                             "colours were not converted as framefarm's (BT.709, limited range)")
    return found
