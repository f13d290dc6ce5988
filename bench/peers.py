"""The peers users actually pick, each in one process, against framefarm in alternating rounds.

Each peer is written as its documentation has users write it, with framefarm's settings: libx264,
crf 18, preset fast, yuv420p, 30 fps, BT.709 (limited range) conversion and tags wherever the
tool takes them. Every peer draws through framefarm.sketch.FrameSource, so the pixels are the
sketch's own; every video is checked for its frame count, its size and format, and its luma PSNR
against the sketch's frames (bench/quality.py). See bench/README.md for how each scales with
cores.
"""

from __future__ import annotations

import statistics
import subprocess
from collections.abc import Sequence
from pathlib import Path

from bench.harness import (
    CRF,
    FRAMEFARM,
    PRESET,
    Measure,
    Workload,
    frame_source,
    load_average,
    run_contender,
)
from bench.quality import luma_psnr

# ffmpeg's output options that make it convert RGB with the BT.709 matrix into limited range and
# tag the stream so (FFmpeg 7.1 and later choose the conversion from the tags; before that it
# took -vf scale=out_color_matrix=bt709:out_range=tv as well). Without them ffmpeg converts
# with BT.601 and tags nothing.
FFMPEG_BT709 = ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
                "-color_range", "tv"]
X264 = ["-crf", str(CRF), "-preset", PRESET]

PIPE, IMAGEIO_FFMPEG, IMAGEIO, MOVIEPY, PYAV = (
    "ffmpeg-pipe", "imageio-ffmpeg", "imageio", "moviepy", "pyav-frame-threads")
PEERS = (PIPE, IMAGEIO_FFMPEG, IMAGEIO, MOVIEPY, PYAV)
PEER_LABELS = {
    FRAMEFARM: "framefarm render, a worker per core",
    PIPE: "raw frames piped into an ffmpeg subprocess",
    IMAGEIO_FFMPEG: "imageio-ffmpeg write_frames",
    IMAGEIO: "imageio get_writer / append_data",
    MOVIEPY: "moviepy 2 VideoClip.write_videofile",
    PYAV: 'PyAV, one process, thread_type = "FRAME"',
}
PEER_WORKLOADS = ("plasma", "wave_plot")
"""Where the peers run by default (`--only peers:circles` runs them on circles too)."""
PEER_ROUNDS, QUICK_PEER_ROUNDS = 3, 1
PEER_TARGET = 1.25
"""framefarm must be at least this many times faster than the strongest peer."""


def _pix_fmt(pixels: object) -> str:
    shape = getattr(pixels, "shape", ())
    return "rgba" if len(shape) == 3 and shape[2] == 4 else "rgb24"


def ffmpeg_pipe(work: Workload, out: Path) -> None:
    """One process draws and writes raw frames (RGBA where the sketch gives RGBA, so nothing is
    copied) into ffmpeg's stdin; ffmpeg converts and x264 encodes with its own threads."""
    import imageio_ffmpeg

    source = frame_source(work)
    first = source.frame(0)
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", _pix_fmt(first), "-s", f"{work.width}x{work.height}",
               "-r", str(work.fps), "-i", "-",
               "-c:v", "libx264", *X264, "-pix_fmt", "yuv420p", *FFMPEG_BT709, str(out)]
    with subprocess.Popen(command, stdin=subprocess.PIPE) as ffmpeg:
        assert ffmpeg.stdin is not None
        ffmpeg.stdin.write(first.data)
        for i in range(1, work.frames):
            ffmpeg.stdin.write(source.frame(i).data)
        ffmpeg.stdin.close()
    if ffmpeg.returncode:
        raise SystemExit(f"ffmpeg exited {ffmpeg.returncode}")


def imageio_ffmpeg_write_frames(work: Workload, out: Path) -> None:
    """imageio-ffmpeg's generator. Its `quality` defaults to 5 (crf 25 on libx264), so it is
    None here and the crf goes in output_params; macro_block_size=2 (even sizes, as yuv420p
    needs) instead of 16, which would rescale 640x360 to 640x368."""
    import imageio_ffmpeg

    source = frame_source(work)
    first = source.frame(0)
    writer = imageio_ffmpeg.write_frames(
        str(out), (work.width, work.height), pix_fmt_in=_pix_fmt(first), pix_fmt_out="yuv420p",
        fps=work.fps, quality=None, codec="libx264", macro_block_size=2, ffmpeg_log_level="error",
        output_params=[*X264, *FFMPEG_BT709])
    writer.send(None)  # start ffmpeg
    writer.send(first)
    for i in range(1, work.frames):
        writer.send(source.frame(i))
    writer.close()


def imageio_get_writer(work: Workload, out: Path) -> None:
    """imageio's v2 writer (its ffmpeg plugin, over imageio-ffmpeg): it picks rgb24 or rgba from
    the first frame; quality=None and macro_block_size=2 as for imageio-ffmpeg."""
    import imageio

    source = frame_source(work)
    with imageio.get_writer(str(out), format="FFMPEG", fps=work.fps, codec="libx264",
                            quality=None, pixelformat="yuv420p", macro_block_size=2,
                            ffmpeg_log_level="error", ffmpeg_params=[*X264, *FFMPEG_BT709]) as writer:
        for i in range(work.frames):
            writer.append_data(source.frame(i))


def moviepy_write_videofile(work: Workload, out: Path) -> None:
    """moviepy 2: a VideoClip whose frame function draws the frame at time t. moviepy pipes
    rgb24 only (RGBA means a mask clip), so an RGBA frame loses its alpha here; it always adds
    `-pix_fmt yuva420p` for libx264, which ffmpeg turns into yuv420p (libx264 has no alpha)."""
    from moviepy import VideoClip

    source = frame_source(work)

    def frame_at(t: float) -> object:
        return source.frame(round(t * work.fps))[..., :3]

    clip = VideoClip(frame_function=frame_at, duration=work.frames / work.fps)
    clip.write_videofile(str(out), fps=work.fps, codec="libx264", preset=PRESET, audio=False,
                         ffmpeg_params=["-crf", str(CRF), *FFMPEG_BT709], logger=None)


def pyav_frame_threads(work: Workload, out: Path) -> None:
    """One process with PyAV: the sketch draws while x264's frame threads encode the frames
    before it. PyAV's default thread_type is SLICE (x264 cuts each frame in slices); FRAME is
    what ffmpeg and x264 use by default."""
    import av
    from av.video.reformatter import ColorRange, Colorspace

    source = frame_source(work)
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=work.fps)
        stream.width, stream.height, stream.pix_fmt = work.width, work.height, "yuv420p"
        stream.thread_type = "FRAME"
        stream.thread_count = 0
        ctx = stream.codec_context
        ctx.colorspace = ctx.color_primaries = ctx.color_trc = 1  # BT.709
        ctx.color_range = int(ColorRange.MPEG)
        stream.options = {"crf": str(CRF), "preset": PRESET}
        for i in range(work.frames):
            pixels = source.frame(i)
            frame = av.VideoFrame.from_ndarray(pixels, format=_pix_fmt(pixels))
            frame = frame.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709,
                                   dst_color_range=ColorRange.MPEG)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


CONTENDERS = {PIPE: ffmpeg_pipe, IMAGEIO_FFMPEG: imageio_ffmpeg_write_frames,
              IMAGEIO: imageio_get_writer, MOVIEPY: moviepy_write_videofile,
              PYAV: pyav_frame_threads}

# -- rounds -------------------------------------------------------------------------------------

ROUND_CONTENDERS = (FRAMEFARM, *PEERS)


def round_order(r: int) -> tuple[str, ...]:
    """framefarm and the peers in round `r`, rotated by one each round."""
    shift = r % len(ROUND_CONTENDERS)
    return ROUND_CONTENDERS[shift:] + ROUND_CONTENDERS[:shift]


def peer_rounds(work: Workload, tmp: Path, rounds: int, *,
                warm_up: bool = True) -> tuple[list[dict[str, Measure]], dict[str, float]]:
    """framefarm and every peer `rounds` times, the order rotating each round, after (with
    `warm_up`) one untimed 1-frame run of each, so the page cache holds what each imports; then
    every contender's last video's luma PSNR."""
    warm = Workload(work.name, work.sketch, 1, work.width, work.height, work.fps)
    for name in ROUND_CONTENDERS if warm_up else ():
        run_contender(name, warm, tmp, tag="-warm-up")
    results: list[dict[str, Measure]] = []
    for r in range(rounds):
        measures: dict[str, Measure] = {}
        for name in round_order(r):
            m = run_contender(name, work, tmp, tag=f"-{r}")
            measures[name] = m
            print(f"{work.name:<10} {name:<18} round {r + 1}/{rounds}: wall {m.wall:6.2f} s  "
                  f"cpu {m.cpu:6.2f} s  {m.bytes / 1e6:7.2f} MB  load {load_average():.2f}",
                  flush=True)
        results.append({name: measures[name] for name in ROUND_CONTENDERS})
    quality = luma_psnr(work, {name: results[-1][name].video for name in ROUND_CONTENDERS})
    return results, quality


def peer_ratios(rounds: Sequence[dict[str, Measure]], contender: str) -> list[float]:
    """Per round, `contender`'s wall time / framefarm's in that round."""
    return [r[contender].wall / r[FRAMEFARM].wall if r[FRAMEFARM].wall > 0 else float("inf")
            for r in rounds]


def strongest(rounds: Sequence[dict[str, Measure]]) -> tuple[str, float]:
    """The peer closest to framefarm (smallest median ratio) and that ratio."""
    medians = {p: statistics.median(peer_ratios(rounds, p)) for p in PEERS}
    best = min(medians, key=medians.__getitem__)
    return best, medians[best]


def median_bytes(rounds: Sequence[dict[str, Measure]], contender: str) -> float:
    return statistics.median(r[contender].bytes for r in rounds)


def peers_markdown(work: Workload, rounds: Sequence[dict[str, Measure]],
                   quality: dict[str, float]) -> list[str]:
    """The peers' table of one workload: medians over the rounds, file size and PSNR."""
    if not rounds:
        return []
    lines = [f"## peers: {work.name} ({work.sketch}, {rounds[0][FRAMEFARM].frames} frame(s)), "
             f"{len(rounds)} alternating round(s)", "",
             "| contender | wall s | wall s min-max | CPU s | peak MB | MB (file) | bytes vs "
             "framefarm | luma PSNR dB | ratio | ratio min-max |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    ff_bytes = median_bytes(rounds, FRAMEFARM)
    for name in ROUND_CONTENDERS:
        walls = [r[name].wall for r in rounds]
        ratios = peer_ratios(rounds, name)
        size = median_bytes(rounds, name)
        lines.append(
            f"| {name} ({PEER_LABELS[name]}) | {statistics.median(walls):.2f} "
            f"| {min(walls):.2f}-{max(walls):.2f} "
            f"| {statistics.median(r[name].cpu for r in rounds):.2f} "
            f"| {statistics.median(r[name].peak_mb for r in rounds):.0f} | {size / 1e6:.3f} "
            f"| {size / ff_bytes:.3f} | {quality.get(name, float('nan')):.2f} "
            f"| {statistics.median(ratios):.2f} | {min(ratios):.2f}-{max(ratios):.2f} |")
    return [*lines, "", "Each round runs framefarm and the five peers once, the order rotating "
            "from round to round; ratio = the contender's wall time / framefarm's in the same "
            "round (above 1: framefarm is faster), median over the rounds; wall, CPU, peak and "
            "file size are medians too; PSNR is of the last round's video. Peak MB: the largest "
            "process of the contender's tree (Python's or, for the four that pipe to it, "
            "ffmpeg's).", ""]


def peer_targets(name: str, rounds: Sequence[dict[str, Measure]]) -> list[tuple[str, str, bool]]:
    """framefarm ≥ PEER_TARGET x faster than the strongest peer, and its file no larger than any
    peer's."""
    if not rounds:
        return []
    best, ratio = strongest(rounds)
    ff = median_bytes(rounds, FRAMEFARM)
    smallest = min(PEERS, key=lambda p: median_bytes(rounds, p))
    peer = median_bytes(rounds, smallest)
    return [(f"≥ {PEER_TARGET}x faster than the strongest peer on {name}",
             f"{ratio:.2f}x {best} (median of {len(rounds)} round(s))", ratio >= PEER_TARGET),
            (f"file no larger than any peer's on {name}",
             f"{ff / 1e6:.2f} MB vs {peer / 1e6:.2f} MB ({smallest}): {ff / peer:.3f}x",
             ff <= peer)]
