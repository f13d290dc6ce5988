"""The contenders of the workload tables (naive, matplotlib, pool, the limit) and the single-process
reference of the size section. Each runs in its own process through bench/contender.py and
draws frames through framefarm.sketch.FrameSource, so every contender draws the same pixels.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.harness import CRF, PRESET, Workload, frame_source
from bench.quality import to_bt709_yuv

if TYPE_CHECKING:
    import av
    import numpy as np

    from framefarm.sketch import FrameSource

_BT709 = 1  # ITU-T H.273 code for BT.709 primaries, transfer and matrix


def naive(work: Workload, out: Path) -> None:
    """The loop people write: every frame to a PNG (Pillow's defaults), then ffmpeg."""
    import imageio_ffmpeg
    from PIL import Image

    source = frame_source(work)
    folder = out.parent / "png"
    folder.mkdir()
    for i in range(work.frames):
        Image.fromarray(source.frame(i)[..., :3]).save(folder / f"{i:06d}.png")
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-framerate",
                    str(work.fps), "-i", str(folder / "%06d.png"), "-c:v", "libx264", "-crf",
                    str(CRF), "-preset", PRESET, "-pix_fmt", "yuv420p", str(out)], check=True)


def matplotlib_own(work: Workload, out: Path) -> None:
    """matplotlib's own: FuncAnimation.save with FFMpegWriter, drawing as the sketch draws."""
    import imageio_ffmpeg
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.animation import FFMpegWriter, FuncAnimation
    from matplotlib.artist import Artist

    matplotlib.rcParams["animation.ffmpeg_path"] = imageio_ffmpeg.get_ffmpeg_exe()
    dpi = 100
    fig = plt.figure(figsize=(work.width / dpi, work.height / dpi), dpi=dpi)
    ax = fig.add_subplot()
    x = np.linspace(0, 4 * np.pi, 800)
    (line,) = ax.plot(x, np.zeros_like(x), lw=2, color="tab:blue")
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(-1.2, 1.2)
    ax.set_xlabel("x")
    ax.set_ylabel("amplitude")
    ax.grid(alpha=0.3)
    title = ax.set_title("travelling wave packet, t =  0.00 s")
    fig.subplots_adjust(left=0.08, right=0.97, bottom=0.1, top=0.92)

    def update(i: int) -> tuple[Artist, ...]:
        t = i / work.fps
        centre = 2 * np.pi + 1.5 * np.pi * np.sin(t * 0.8)
        line.set_ydata(np.sin(3 * x - 4 * t) * np.exp(-((x - centre) ** 2) / 4))
        title.set_text(f"travelling wave packet, t = {t:5.2f} s")
        return line, title

    animation = FuncAnimation(fig, update, frames=work.frames, blit=False)
    writer = FFMpegWriter(fps=work.fps, codec="libx264",
                          extra_args=["-crf", str(CRF), "-preset", PRESET, "-pix_fmt", "yuv420p"])
    animation.save(str(out), writer=writer, dpi=dpi)


_POOL_SOURCE: FrameSource | None = None


def _pool_init(work: Workload) -> None:
    global _POOL_SOURCE
    _POOL_SOURCE = frame_source(work)


def _pool_frame(i: int) -> np.ndarray:
    assert _POOL_SOURCE is not None
    pixels: np.ndarray = _POOL_SOURCE.frame(i)[..., :3].copy()
    return pixels


def pool(work: Workload, out: Path) -> None:
    """What a skilled user writes in an afternoon: a Pool renders, the parent encodes (PyAV)."""
    import multiprocessing

    import av

    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=work.fps)
        stream.width, stream.height, stream.pix_fmt = work.width, work.height, "yuv420p"
        stream.options = {"crf": str(CRF), "preset": PRESET}
        with multiprocessing.Pool(os.cpu_count(), initializer=_pool_init, initargs=(work,)) as p:
            for pixels in p.imap(_pool_frame, range(work.frames), chunksize=4):
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def x264_stream(container: av.container.OutputContainer, work: Workload, *,
                threads: int) -> av.VideoStream:
    """A libx264 stream set up as framefarm.video.SegmentWriter sets its own: crf, preset,
    yuv420p, tagged BT.709 limited range; `threads` x264 threads (0: x264's choice, frame
    threads)."""
    from av.video.reformatter import ColorRange

    stream = container.add_stream("libx264", rate=work.fps)
    stream.width, stream.height, stream.pix_fmt = work.width, work.height, "yuv420p"
    ctx = stream.codec_context
    ctx.colorspace = ctx.color_primaries = ctx.color_trc = _BT709
    ctx.color_range = int(ColorRange.MPEG)
    ctx.thread_count = threads
    # PyAV's own default is SLICE, which makes x264 cut every frame into slices (one per thread);
    # FRAME is x264's default, as ffmpeg runs it.
    ctx.thread_type = "FRAME"
    ctx.options = {"crf": str(CRF), "preset": PRESET, **({"threads": str(threads)} if threads else {})}
    return stream


def reference(work: Workload, out: Path) -> None:
    """The size section's reference: one process encodes every frame of the video as one
    stream, with x264's default threads and framefarm's settings. For a 1-frame video it is
    also the one_frame table's floor: the least any Python tool can do (import NumPy and
    PyAV, load the sketch, draw, encode) in one fresh process."""
    import av

    source = frame_source(work)
    with av.open(str(out), mode="w", format="mp4") as container:
        stream = x264_stream(container, work, threads=0)
        for i in range(work.frames):
            frame = to_bt709_yuv(source.frame(i))
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _limit_split(work: Workload, out: Path, frames: range) -> dict[str, float]:
    """The limit's loop over `frames`: CPU seconds of sketch, conversion and x264 (one thread
    each) into `out`, the encoder's flush counted as encoding."""
    import av

    source = frame_source(work)
    split = {"sketch": 0.0, "convert": 0.0, "encode": 0.0}
    with av.open(str(out), mode="w", format="mp4") as container:
        stream = x264_stream(container, work, threads=1)
        for pts, i in enumerate(frames):
            t0 = time.process_time()
            pixels = source.frame(i)
            t1 = time.process_time()
            frame = to_bt709_yuv(pixels, threads=1)
            frame.pts = pts
            t2 = time.process_time()
            container.mux(stream.encode(frame))
            t3 = time.process_time()
            split["sketch"] += t1 - t0
            split["convert"] += t2 - t1
            split["encode"] += t3 - t2
        t0 = time.process_time()
        container.mux(stream.encode(None))
        split["encode"] += time.process_time() - t0
    return split


def _limit_share(args: tuple[Workload, str, int, int]) -> dict[str, float]:
    work, out, start, stop = args
    return _limit_split(work, Path(out), range(start, stop))


def limit_every_core(work: Workload, out: Path) -> None:
    """The limit with every core busy: the limit's loop, but in one process per core at once,
    each on its own contiguous share of the frames (no key frames saved, no joining). Printed:
    the busiest process's CPU seconds, the time this machine needs for the frames when its
    cores run side by side (they share caches, memory bandwidth and, on a VM, perhaps a
    physical core), against the limit's ideal of one core's speed times the cores; and `start`,
    the seconds from this process's start until the sketch is set up, which no run avoids."""
    import multiprocessing

    frame_source(work)  # the serial start every run pays before its first frame
    started = _since_start()
    cores = os.cpu_count() or 1
    cuts = [work.frames * k // cores for k in range(cores + 1)]
    shares = [(work, str(out.with_name(f"share{k}.mp4")), cuts[k], cuts[k + 1])
              for k in range(cores) if cuts[k + 1] > cuts[k]]
    with multiprocessing.get_context("fork").Pool(len(shares)) as pool:
        splits = pool.map(_limit_share, shares)
    busiest = max(sum(split.values()) for split in splits)
    # Joined (untimed) only so that the benchmark's frame check sees every frame.
    from fractions import Fraction

    from framefarm.video import concat_segments

    concat_segments([(Path(share[1]), share[2]) for share in shares], out,
                    rate=Fraction(work.fps))
    print(json.dumps({"limit": busiest, "start": started,
                      **{k: sum(s[k] for s in splits) for k in splits[0]}}))


def _since_start() -> float:
    """Seconds since this process started (the kernel's start time, in clock ticks): Python's
    start, its imports (NumPy, PyAV, framefarm, the sketch's own) and the sketch's setup."""
    with open("/proc/self/stat") as stat:
        ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as uptime:
        now = float(uptime.read().split()[0])
    return now - ticks / os.sysconf("SC_CLK_TCK")



def _peak_mb() -> float:
    """This process's peak resident memory so far (VmHWM), MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def memory_parts(work: Workload, out: Path) -> None:
    """Where a render worker's memory goes: the peak after the imports (Python, NumPy, PyAV,
    framefarm), after the sketch's setup and first frame, and after encoding the frames through
    framefarm's own SegmentWriter with the threads a worker uses. Printed as JSON (MB)."""
    from framefarm.steps.render import ENCODER_THREADS
    from framefarm.video import SegmentWriter, segment_keyint

    parts = {"imports": _peak_mb()}
    source = frame_source(work)
    first = source.frame(0)
    parts["sketch"] = _peak_mb()
    from framefarm.model import VideoSettings

    video = VideoSettings(width=work.width, height=work.height, fps=str(work.fps), crf=CRF,
                          preset=PRESET)
    with SegmentWriter(out, video=video, threads=ENCODER_THREADS,
                       keyint=segment_keyint(work.frames)) as writer:
        writer.write(first)
        for i in range(1, work.frames):
            writer.write(source.frame(i))
    parts["encoded"] = _peak_mb()
    print(json.dumps(parts))


def limit(work: Workload, out: Path) -> None:
    """The machine's floor: CPU time of sketch + RGB->YUV + x264 (one thread each) per frame,
    summed over every frame, divided by the number of cores. Printed as JSON for the parent.

    The conversion and the encoder are set up exactly as framefarm.video.SegmentWriter sets them
    (BT.709, limited range, crf, preset), but timed apart; the encoder's flush (x264 holds back
    its look-ahead frames until then) is counted as encoding. Imports and the sketch's setup are
    not: they are fixed costs, not the floor per frame.
    """
    split = _limit_split(work, out, range(work.frames))
    print(json.dumps({**split, "limit": limit_seconds(split, cores=os.cpu_count() or 1),
                      "x264": x264_version(out)}))


def limit_seconds(split: dict[str, float], *, cores: int) -> float:
    """The limit: every frame's single-threaded CPU seconds, spread perfectly over `cores`."""
    return sum(split.values()) / max(1, cores)


def x264_version(video: Path) -> str:
    """The x264 build that encoded `video`, from the SEI message x264 writes into its stream."""
    data = video.read_bytes()[:1_000_000]
    at = data.find(b"x264 - core ")
    if at < 0:
        return "unknown"
    found = data[at:at + 40].split(b" - H.264")[0].decode("ascii", "replace")
    return found.replace("x264 - core", "x264 core")
