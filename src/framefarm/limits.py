"""The largest inputs framefarm accepts, and the checks that refuse the rest before any job runs.

Each limit is the real one of the part it protects, measured on this build of libx264/FFmpeg
(PyAV 18, libavcodec 62) with one-frame encodes:

* **frame size**: libx264 refuses a side above 16,384 pixels ("invalid width x height": 16384x64
  encodes, 16386x64 does not), and FFmpeg refuses to allocate a frame whose
  (8·width + 1024)·(height + 128) reaches 2**31 - 1 (`av_image_check_size`: 16384x16128 encodes,
  16384x16130 does not). Sizes beyond H.264 level 6.2 (8192x4320) still encode, but many players
  will not play them.
* **frames**: 1,000,000,000 frames is over a year of video at 30 fps, and half of what one MP4
  track can count: FFmpeg's MP4 muxer counts a track's frames in a signed 32-bit integer
  (2,147,483,647), and the index it writes holds at least 4 bytes per frame (4 GB at this
  limit). Counts near 2**63 would also overflow the job log's 64-bit integers.
* **workers**: a worker is a process rendering and encoding one chunk at a time, so more workers
  than CPUs only share them while each holds a sketch, frames and an encoder in memory.
* **run ids** become file names and S3 keys (`runs/{run_id}/…`), so they are one path part of
  safe characters.
* **output names**: framefarm writes H.264 in an MP4 file, so the name says .mp4 (or .m4v).

The checks raise UserError with the input and the fix; the CLI wraps them as argparse types.
"""

from __future__ import annotations

import os
import re
from pathlib import PurePosixPath

from framefarm.errors import UserError

MAX_SIDE = 16384
"""libx264's largest width or height, in pixels."""
_FFMPEG_IMAGE_LIMIT = 2**31 - 1
"""FFmpeg's av_image_check_size: (8·width + 1024)·(height + 128) must stay below this."""

MAX_FRAMES = 1_000_000_000
"""The most frames one run may have (386 days of video at 30 fps)."""

MAX_WORKERS = 256
"""The most worker processes on one machine, unless it has more CPUs than that."""

RUN_ID_FORM = "1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit"
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

VIDEO_SUFFIXES = (".mp4", ".m4v")
"""Names of the file framefarm writes: H.264 in MP4 (.m4v is Apple's name for the same file)."""


def _shown(text: str, limit: int = 40) -> str:
    """`text` quoted, cut short when long, so a message stays one readable line."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def check_run_id(text: str) -> str:
    """`text` when it is a run id that is safe as a file name and an S3 key; else a UserError."""
    if _RUN_ID.fullmatch(text) is None:
        why = "is too long" if len(text) > 128 else "is not safe as a file name and an S3 key"
        raise UserError(f"run id {_shown(text)} {why}: use {RUN_ID_FORM}, e.g. title-2024-05")
    return text


def check_frames(name: str, frames: int) -> int:
    """`frames` when at most MAX_FRAMES; else a UserError naming `name` ('frames' …)."""
    if frames > MAX_FRAMES:
        raise UserError(f"{name} must be at most {MAX_FRAMES:,} (over a year of video at 30 fps), got "
                        f"{frames}: render a long video as several runs")
    return frames


def largest_size(width: int, height: int) -> tuple[int, int]:
    """The largest even size at most `width` x `height` that the encoder takes: each side cut
    to MAX_SIDE, then both shrunk in proportion while the frame has too many pixels."""
    w, h = max(2, min(width, MAX_SIDE) // 2 * 2), max(2, min(height, MAX_SIDE) // 2 * 2)
    long, short = max(w, h), min(w, h)
    for side in range(long, 1, -2):
        other = max(2, int(side * short / long) // 2 * 2)
        size = (side, other) if w >= h else (other, side)
        if fits_encoder(*size):
            return size
    return 2, 2


def fits_encoder(width: int, height: int) -> bool:
    """True when libx264 and FFmpeg encode frames of `width` x `height` (see the module docstring)."""
    return (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE
            and (8 * width + 1024) * (height + 128) < _FFMPEG_IMAGE_LIMIT)


def check_frame_size(width: int, height: int, *, fix: str = "use") -> tuple[int, int]:
    """(width, height) when the encoder takes frames of that size; else a UserError with the
    largest size it takes (see largest_size). `fix` starts the fix: 'use', 'use --size' …"""
    if fits_encoder(width, height):
        return width, height
    w, h = largest_size(width, height)
    if width > MAX_SIDE or height > MAX_SIDE:
        why = f"libx264 encodes at most {MAX_SIDE} pixels a side"
    else:
        why = "FFmpeg allocates frames of at most about 268 million pixels (e.g. 16384x16128)"
    raise UserError(f"size {width}x{height} is too large for H.264: {why}; {fix} {w}x{h} or smaller")


def cpu_count() -> int:
    """CPUs this process may use (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def max_workers() -> int:
    """The most worker processes allowed here: MAX_WORKERS, or the CPU count when higher."""
    return max(MAX_WORKERS, cpu_count())


def check_workers(name: str, workers: int) -> int:
    """`workers` when at most max_workers(); else a UserError naming `name` ('workers' …)."""
    limit, cpus = max_workers(), cpu_count()
    if workers > limit:
        raise UserError(f"{name} must be at most {limit}, got {workers}: a worker is a process "
                        f"that renders one chunk at a time, so more workers than CPUs only share "
                        f"them (this machine has {cpus}); use {cpus} or leave it out (one per CPU)")
    return workers


def check_output_name(name: str) -> str:
    """`name` when it names an MP4 file (.mp4, .m4v, any case); else a UserError with the fix.

    `name` is a path or a storage URL (s3://bucket/video.mp4).
    """
    path = PurePosixPath(name.replace("\\", "/"))
    suffix = path.suffix
    if suffix.lower() in VIDEO_SUFFIXES:
        return name
    if not path.name or path.name in (".", "..") or name.endswith(("/", "\\")):
        example = f"{name.rstrip('/')}/video.mp4"
    else:
        example = name[: len(name) - len(suffix)].rstrip(".") + ".mp4"
    what = f"a {suffix} file" if suffix else "no .mp4 file"
    raise UserError(f"output {_shown(name, 80)} names {what}: framefarm writes H.264 in MP4, so "
                    f"name the output .mp4, e.g. {example}")


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_memory(name: str, text: str) -> int:
    """`8G`, `512M`, `1.5GiB`, `2048MB` as bytes (powers of 1024); else a UserError naming `name`."""
    value = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = value[-1:] if value[-1:] in _UNITS else ""
    try:
        number = float(value[: len(value) - len(unit)])
    except ValueError:
        number = -1.0
    if not number > 0 or number == float("inf"):
        raise UserError(f"{name} {text!r} is not an amount of memory: use a number with a unit, "
                        f"like 8G or 512M")
    return int(number * _UNITS[unit])


def available_memory() -> int:
    """Bytes this machine can give without swapping now (Linux's MemAvailable), else its RAM."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def shown_memory(size: float) -> str:
    """`1.5 GB`, `640 MB`: an amount of memory for messages (powers of 1024)."""
    return f"{size / (1 << 30):.1f} GB" if size >= 1 << 30 else f"{size / (1 << 20):.0f} MB"
