"""framefarm side by side with what users do today, and with the machine's limit.

    pip install -e '.[bench]'
    python bench/run.py            # every workload, writes bench/RESULTS.md (~2.5 minutes on 2 cores)
    python bench/run.py --quick    # small frame counts, a smoke run
    python bench/run.py --only tracing:plasma --out /tmp/tracing.md   # tracing's cost alone

Every contender runs as its own subprocess (fresh imports, no shared caches) and is timed from
outside: wall time, CPU time of the whole process tree, and peak memory (the largest process,
sampled with psutil). Every video made is checked (frame count) so nobody wins by doing less.
Tracing's cost is framefarm with tracing off, as default and exporting over OTLP/HTTP to a
receiver in this process, in alternating rounds (median of the rounds).
See bench/README.md for what each contender is.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import psutil

    from framefarm.sketch import FrameSource

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
if str(ROOT) not in sys.path:  # the tests' OTLP receiver (tests/otlp.py) stands in for a collector
    sys.path.insert(0, str(ROOT))

from tests.otlp import OtlpReceiver  # noqa: E402

CRF, PRESET = 18, "fast"


@dataclass(frozen=True)
class Workload:
    name: str
    sketch: str
    frames: int
    width: int = 1280
    height: int = 720
    fps: int = 30
    contenders: tuple[str, ...] = ("naive", "pool", "framefarm", "limit")
    per_job: int = 0
    """framefarm's --per-job (0: auto)."""


WORKLOADS = (
    Workload("plasma", "plasma.py", 240),
    Workload("circles", "circles.py", 240),
    Workload("wave_plot", "wave_plot.py", 120,
             contenders=("naive", "matplotlib", "pool", "framefarm", "limit")),
    Workload("one_frame", "plasma.py", 1, contenders=("naive", "pool", "framefarm")),
)

# Worker memory: (frames, frames per job). Chunks are pinned at 60 and 120 frames because x264's
# own buffers (look-ahead and reference frames, ~180 MB at 720p) fill during a segment's first ~50
# frames: both runs are past that, and frames per chunk and chunks per worker both double.
MEMORY_RUNS = ((240, 60), (960, 120))
QUICK_MEMORY_RUNS = ((120, 60), (240, 120))

# Tracing's cost: framefarm three ways on these workloads, in alternating rounds.
UNTRACED, TRACED, OTLP = "framefarm-untraced", "framefarm", "framefarm-otlp"
TRACING_CONTENDERS = (UNTRACED, TRACED, OTLP)
TRACING_LABELS = {
    UNTRACED: "framefarm, tracing off (OTEL_SDK_DISABLED=true)",
    TRACED: "framefarm, default (spans stored with the run)",
    OTLP: "framefarm, exporting over OTLP/HTTP to 127.0.0.1",
}
TRACING_WORKLOADS = ("plasma", "circles")
ROUNDS, QUICK_ROUNDS = 5, 2
TRACING_BUDGET = 1.03
"""Tracing on may cost at most 3% wall time (traced wall / untraced wall, median of the rounds)."""
# The caller's tracing and framefarm settings must not leak into a framefarm contender.
_FOREIGN_ENV = ("OTEL_", "FRAMEFARM_", "TRACEPARENT", "_X_AMZN_TRACE_ID", "JOB_TYPE", "AWS_BATCH_")


@dataclass
class Measure:
    """One contender on one workload."""

    contender: str
    wall: float
    cpu: float
    peak_mb: float
    worker_peak_mb: float = 0.0
    frames: int = 0
    note: str = ""
    spans: int = 0
    """framefarm: spans in the run's stored trace (runs/RUN/trace.jsonl)."""
    exported: int = 0
    """framefarm over OTLP: spans the receiver got in the run's trace."""


# -- measuring a subprocess ---------------------------------------------------------------------


def peak_rss_mb(process: psutil.Process) -> float:
    """A process's peak RSS so far in MB: the kernel's high-water mark (VmHWM), so a peak between
    two samples is not missed; the current RSS where /proc is not there."""
    try:
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return float(process.memory_info().rss) / 2**20


def measure(command: Sequence[str], *, cwd: Path, contender: str,
            env: dict[str, str] | None = None) -> Measure:
    """Run `command`; wall time, CPU time of its whole tree, and peak RSS (largest process, and
    largest process other than the root: a worker)."""
    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    process = subprocess.Popen(list(command), cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    peaks: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        try:
            root = psutil.Process(process.pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for p in tree:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    peaks[p.pid] = max(peaks.get(p.pid, 0.0), peak_rss_mb(p))
            done.wait(0.05)  # light: sampling must not slow what it measures

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - began
    done.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0:
        raise SystemExit(f"{contender} failed ({process.returncode}):\n{stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    workers = [mb for pid, mb in peaks.items() if pid != process.pid]
    note = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    return Measure(contender, wall, cpu, max(peaks.values(), default=0.0),
                   max(workers, default=0.0), note=note)


def count_frames(path: Path) -> int:
    """Frames in a video, counted by decoding every one of them."""
    from framefarm.video import probe

    frames: int = probe(path).frames
    return frames


# -- contenders, each run in its own process as `run.py --contender NAME …` ----------------------


def _source(work: Workload) -> FrameSource:
    from framefarm.sketch import FrameSource, load_sketch

    return FrameSource(load_sketch(str(EXAMPLES / work.sketch)), width=work.width,
                       height=work.height, fps=str(work.fps), total_frames=work.frames)


def contender_naive(work: Workload, out: Path) -> None:
    """The loop people write: every frame to a PNG (Pillow's defaults), then ffmpeg."""
    import imageio_ffmpeg
    from PIL import Image

    source = _source(work)
    folder = out.parent / "png"
    folder.mkdir()
    for i in range(work.frames):
        Image.fromarray(source.frame(i)[..., :3]).save(folder / f"{i:06d}.png")
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-framerate",
                    str(work.fps), "-i", str(folder / "%06d.png"), "-c:v", "libx264", "-crf",
                    str(CRF), "-preset", PRESET, "-pix_fmt", "yuv420p", str(out)], check=True)


def contender_matplotlib(work: Workload, out: Path) -> None:
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
    _POOL_SOURCE = _source(work)


def _pool_frame(i: int) -> np.ndarray:
    assert _POOL_SOURCE is not None
    pixels: np.ndarray = _POOL_SOURCE.frame(i)[..., :3].copy()
    return pixels


def contender_pool(work: Workload, out: Path) -> None:
    """What a skilled user writes in an afternoon: a Pool renders, the parent encodes (PyAV)."""
    import multiprocessing

    import av

    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=work.fps)
        stream.width, stream.height, stream.pix_fmt = work.width, work.height, "yuv420p"
        stream.options = {"crf": str(CRF), "preset": PRESET}
        with multiprocessing.Pool(os.cpu_count(), initializer=_pool_init, initargs=(work,)) as pool:
            for pixels in pool.imap(_pool_frame, range(work.frames), chunksize=4):
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def contender_limit(work: Workload, out: Path) -> None:
    """The machine's floor: CPU time of sketch + RGB->YUV + x264 (one thread each) per frame,
    summed over every frame, divided by the number of cores. Printed as JSON for the parent.

    The conversion and the encoder are set up exactly as framefarm.video.SegmentWriter sets them
    (BT.709, limited range, crf, preset), but timed apart; the encoder's flush (x264 holds back
    its look-ahead frames until then) is counted as encoding. Imports and the sketch's setup are
    not: they are fixed costs, not the floor per frame.
    """
    import av
    from av.video.reformatter import ColorRange, Colorspace

    source = _source(work)
    split = {"sketch": 0.0, "convert": 0.0, "encode": 0.0}
    with av.open(str(out), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=work.fps)
        stream.width, stream.height, stream.pix_fmt = work.width, work.height, "yuv420p"
        ctx = stream.codec_context
        ctx.colorspace = ctx.color_primaries = ctx.color_trc = 1  # BT.709
        ctx.color_range = int(ColorRange.MPEG)
        ctx.thread_count = 1
        ctx.options = {"crf": str(CRF), "preset": PRESET, "threads": "1"}
        for i in range(work.frames):
            t0 = time.process_time()
            pixels = source.frame(i)
            t1 = time.process_time()
            frame = av.VideoFrame.from_ndarray(
                pixels, format="rgba" if pixels.shape[2] == 4 else "rgb24")
            frame = frame.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709,
                                   dst_color_range=ColorRange.MPEG, threads=1)
            frame.pts = i
            t2 = time.process_time()
            container.mux(stream.encode(frame))
            t3 = time.process_time()
            split["sketch"] += t1 - t0
            split["convert"] += t2 - t1
            split["encode"] += t3 - t2
        t0 = time.process_time()
        container.mux(stream.encode(None))
        split["encode"] += time.process_time() - t0
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


def plan_million() -> dict[str, float]:
    """Planning 1,000,000 frames: the pure plan and its JSON, then the plan step as `framefarm
    render` runs it in-process (load the sketch, probe a frame, store sketch and plan.json, here in
    memory storage); and, for information, walking every chunk of a plan."""
    from framefarm.model import VideoSettings
    from framefarm.steps.plan import PlanRequest, make_plan, run_plan
    from framefarm.storage import open_storage

    video = VideoSettings(width=1280, height=720, fps="30", crf=CRF, preset=PRESET)
    times = {}
    for per_job in (1, 100):
        began = time.perf_counter()
        plan = make_plan(run_id="bench", sketch="s.py", total_frames=1_000_000,
                         frames_per_job=per_job, video=video)
        assert plan.to_json()
        times[f"plan, {per_job} frame(s) per job (make_plan + plan.json)"] = (
            time.perf_counter() - began)
        began = time.perf_counter()
        assert sum(len(chunk) for chunk in plan.chunks()) == 1_000_000
        times[f"walk all {plan.size:,} chunks"] = time.perf_counter() - began
    storage = open_storage("memory://bench-plan")
    steps: tuple[tuple[int | None, str], ...] = ((1, "1 frame per job"), (None, "--per-job auto"))
    for step_per_job, label in steps:
        request = PlanRequest(sketch=str(EXAMPLES / "plasma.py"), total_frames=1_000_000,
                              frames_per_job=step_per_job, parallelism=os.cpu_count() or 1,
                              start_cost=0.005)
        began = time.perf_counter()
        run_plan(request, storage=storage)
        times[f"plan step, {label} (sketch loaded, stored, plan.json written)"] = (
            time.perf_counter() - began)
    return times


CONTENDERS: dict[str, Callable[[Workload, Path], None]] = {
    "naive": contender_naive, "matplotlib": contender_matplotlib, "pool": contender_pool,
    "limit": contender_limit,
}


def framefarm_env(name: str, receiver: OtlpReceiver | None = None) -> dict[str, str]:
    """The environment of a framefarm contender: this one without the caller's tracing and
    framefarm settings, plus what the contender sets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_ENV)}
    if name == UNTRACED:
        env["OTEL_SDK_DISABLED"] = "true"
    elif name == OTLP:
        if receiver is None:
            raise ValueError(f"{OTLP} needs an OTLP receiver")
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
    return env


def stored_spans(folder: Path) -> tuple[str, set[str]]:
    """A framefarm run's stored trace under `folder` (default storage, ./framefarm-data): its trace
    id and span ids; ('', set()) when the run stored none."""
    traces = list((folder / "framefarm-data" / "runs").glob("*/trace.jsonl"))
    if len(traces) > 1:
        raise SystemExit(f"more than one run under {folder}")
    if not traces:
        return "", set()
    spans = [json.loads(line) for line in traces[0].read_text().splitlines() if line.strip()]
    trace_ids = {s["trace_id"] for s in spans}
    if len(trace_ids) != 1:
        raise SystemExit(f"{traces[0]}: {len(trace_ids)} trace ids, expected one")
    return trace_ids.pop(), {s["span_id"] for s in spans}


def check_trace(name: str, result: Measure, folder: Path, receiver: OtlpReceiver | None) -> None:
    """Tracing contenders did their work: tracing off stores nothing; default stores the run's
    spans; OTLP stores them and the receiver got every one of them (the exporter may send more
    than is stored, never less)."""
    trace_id, ids = stored_spans(folder)
    result.spans = len(ids)
    if name == UNTRACED:
        if ids or any((folder / "framefarm-data" / "runs").glob("*/trace")):
            raise SystemExit(f"{name} stored spans with OTEL_SDK_DISABLED=true")
        return
    if not ids:
        raise SystemExit(f"{name} stored no trace under {folder}")
    if name == OTLP:
        assert receiver is not None
        received = receiver.received(trace_id)
        result.exported = len(received)
        if not ids <= received:
            raise SystemExit(f"{name}: the receiver got {len(ids & received)} of the run's "
                             f"{len(ids)} stored spans")


def run_contender(name: str, work: Workload, tmp: Path, *, receiver: OtlpReceiver | None = None,
                  tag: str = "") -> Measure:
    out = tmp / f"{work.name}-{name}{tag}" / "out.mp4"
    out.parent.mkdir(parents=True)
    env = None
    if name in TRACING_CONTENDERS:
        exe = shutil.which("framefarm", path=str(Path(sys.executable).parent)) or "framefarm"
        command = [exe, "render", str(EXAMPLES / work.sketch), "-o", str(out), "--frames",
                   str(work.frames), "--size", f"{work.width}x{work.height}"]
        if work.per_job:
            command += ["--per-job", str(work.per_job)]
        env = framefarm_env(name, receiver)
    else:
        command = [sys.executable, str(Path(__file__)), "--contender", name, "--workload",
                   json.dumps(work.__dict__), "--out-video", str(out)]
    result = measure(command, cwd=out.parent, contender=name, env=env)
    result.frames = count_frames(out)
    if result.frames != work.frames:
        raise SystemExit(f"{name} made {result.frames} frames of {work.frames}")
    if name in TRACING_CONTENDERS:
        check_trace(name, result, out.parent, receiver)
    return result


def round_order(r: int) -> tuple[str, ...]:
    """The tracing contenders in round `r`: rotated by one each round, so that each runs first,
    second and third equally often (and after each of the others)."""
    shift = r % len(TRACING_CONTENDERS)
    return TRACING_CONTENDERS[shift:] + TRACING_CONTENDERS[:shift]


def tracing_rounds(work: Workload, tmp: Path, rounds: int) -> list[dict[str, Measure]]:
    """framefarm with tracing off, as default and exporting over OTLP, `rounds` times, the order
    rotating each round so that none always runs first (or after the same one). One untimed
    1-frame OTLP run first warms the page cache with everything the three import."""
    results: list[dict[str, Measure]] = []
    with OtlpReceiver() as receiver:
        warm = Workload(work.name, work.sketch, 1, work.width, work.height, work.fps)
        run_contender(OTLP, warm, tmp, receiver=receiver, tag="-warm-up")
        for r in range(rounds):
            measures: dict[str, Measure] = {}
            for name in round_order(r):
                m = run_contender(name, work, tmp, receiver=receiver, tag=f"-{r}")
                measures[name] = m
                print(f"{work.name:<10} {name:<18} round {r + 1}/{rounds}: wall {m.wall:6.2f} s  "
                      f"cpu {m.cpu:6.2f} s  spans {m.spans}"
                      + (f" (exported {m.exported})" if name == OTLP else "")
                      + f"  load {os.getloadavg()[0]:.2f}", flush=True)
            results.append({name: measures[name] for name in TRACING_CONTENDERS})
    return results


# -- the report ---------------------------------------------------------------------------------


@dataclass
class Report:
    results: dict[str, list[Measure]] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)
    splits: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per workload: the limit's CPU seconds for the sketch, the conversion and x264."""
    x264: str = ""
    load: float = 0.0
    """The 1-minute load average when the run began (anything else running skews the numbers)."""
    plan: dict[str, float] = field(default_factory=dict)
    memory: dict[int, float] = field(default_factory=dict)
    """framefarm's largest worker peak (MB) by frames in the video."""
    memory_per_job: dict[int, int] = field(default_factory=dict)
    tracing: dict[str, list[dict[str, Measure]]] = field(default_factory=dict)
    """Per workload, each round of the tracing comparison: contender -> its measure."""

    def get(self, workload: str, contender: str) -> Measure | None:
        return next((m for m in self.results.get(workload, []) if m.contender == contender), None)


def ratio(slow: float, fast: float) -> float:
    """How many times faster `fast` is than `slow`."""
    return slow / fast if fast > 0 else float("inf")


def tracing_ratios(rounds: Sequence[dict[str, Measure]], contender: str, *,
                   cpu: bool = False) -> list[float]:
    """Per round, `contender`'s wall (or CPU) time / framefarm's with tracing off in that round."""
    def seconds(m: Measure) -> float:
        return m.cpu if cpu else m.wall

    return [seconds(r[contender]) / seconds(r[UNTRACED]) if seconds(r[UNTRACED]) > 0
            else float("inf") for r in rounds]


def tracing_cost(rounds: Sequence[dict[str, Measure]]) -> tuple[float, float]:
    """Median traced / untraced wall over the rounds: (default, OTLP)."""
    return (statistics.median(tracing_ratios(rounds, TRACED)),
            statistics.median(tracing_ratios(rounds, OTLP)))


def memory_flat(before: float, after: float) -> bool:
    """A worker's peak did not grow: within 10% or 15 MB (sampling and allocator noise)."""
    return after - before <= max(0.10 * before, 15.0)


def targets(report: Report) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for each of issue 3's targets that this run measured."""
    rows: list[tuple[str, str, bool]] = []

    def wall(w: str, c: str) -> float | None:
        m = report.get(w, c)
        return m.wall if m else None

    ff, naive = wall("plasma", "framefarm"), wall("plasma", "naive")
    if ff and naive:
        rows.append(("≥ 5x faster than naive on plasma", f"{ratio(naive, ff):.2f}x",
                     ratio(naive, ff) >= 5))
    ff, mpl = wall("wave_plot", "framefarm"), wall("wave_plot", "matplotlib")
    if ff and mpl:
        rows.append(("≥ 1.8x faster than matplotlib's own on wave_plot", f"{ratio(mpl, ff):.2f}x",
                     ratio(mpl, ff) >= 1.8))
    for w in report.results:
        ff, pool = wall(w, "framefarm"), wall(w, "pool")
        if ff and pool:
            rows.append((f"not slower than hand-written parallel on {w}",
                         f"{ratio(pool, ff):.2f}x", ratio(pool, ff) >= 1.0))
    for w in ("plasma", "circles"):
        ff, limit = wall(w, "framefarm"), report.limits.get(w)
        if ff and limit:
            rows.append((f"wall ≤ 1.15x the limit on {w}", f"{ff / limit:.2f}x the limit",
                         ff / limit <= 1.15))
    one = wall("one_frame", "framefarm")
    if one:
        rows.append(("1-frame video ≤ 1.0 s wall", f"{one:.2f} s", one <= 1.0))
    planning = [v for k, v in report.plan.items() if k.startswith("plan")]
    if planning:
        worst = max(planning)
        rows.append(("planning 1,000,000 frames ≤ 1 s", f"{worst * 1000:.1f} ms", worst <= 1.0))
    if len(report.memory) == 2:
        (n1, m1), (n2, m2) = sorted(report.memory.items())
        rows.append((f"worker peak memory flat from {n1} to {n2} frames",
                     f"{m1:.0f} MB → {m2:.0f} MB", memory_flat(m1, m2)))
    for w, rounds in report.tracing.items():
        if rounds:
            default, otlp = tracing_cost(rounds)
            rows.append((f"tracing on costs ≤ 3% wall time on {w}",
                         f"default {default:.3f}x, OTLP {otlp:.3f}x tracing off's wall "
                         f"(median of {len(rounds)} round(s))",
                         max(default, otlp) <= TRACING_BUDGET))
    return rows


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import av

    return (f"{os.cpu_count()} cores, {model}, {memory:.0f} GB RAM; Python "
            f"{platform.python_version()}, PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info})")


def tracing_markdown(name: str, rounds: Sequence[dict[str, Measure]]) -> list[str]:
    """The tracing comparison of one workload: medians over the rounds, and their spread."""
    if not rounds:
        return []
    work = next(w for w in WORKLOADS if w.name == name)
    frames = rounds[0][UNTRACED].frames
    lines = [f"## tracing: {name} ({work.sketch}, {frames} frame(s)), {len(rounds)} alternating "
             f"round(s)", "",
             "| contender | wall s | wall s min-max | CPU s | spans stored / exported "
             "| ratio | ratio min-max | CPU ratio |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for contender in TRACING_CONTENDERS:
        walls = [r[contender].wall for r in rounds]
        cpus = [r[contender].cpu for r in rounds]
        spans = statistics.median([r[contender].spans for r in rounds])
        exported = statistics.median([r[contender].exported for r in rounds])
        shown = f"{spans:.0f} / {exported:.0f}" if contender == OTLP else f"{spans:.0f}"
        ratios = tracing_ratios(rounds, contender)
        cpu_ratio = statistics.median(tracing_ratios(rounds, contender, cpu=True))
        lines.append(f"| {TRACING_LABELS[contender]} | {statistics.median(walls):.2f} "
                     f"| {min(walls):.2f}-{max(walls):.2f} | {statistics.median(cpus):.2f} "
                     f"| {shown} | {statistics.median(ratios):.3f} "
                     f"| {min(ratios):.3f}-{max(ratios):.3f} | {cpu_ratio:.3f} |")
    return [*lines, "", "Each round runs the three once, the order rotating from round to round; "
            "ratio = the contender's wall (CPU) time / tracing off's in the same round, median "
            "over the rounds; wall and CPU seconds are medians too. The OTLP receiver runs in the "
            "benchmark's process on the same cores.", ""]


def markdown(report: Report, *, quick: bool) -> str:
    size = "640x360" if quick else "1280x720"
    lines = ["# framefarm benchmark results", "",
             f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {machine()}"
             + (f", {report.x264}" if report.x264 else "")
             + f" · load average {report.load:.2f} at the start" + (" · **quick run**" if quick else ""),
             "", f"All videos H.264 (libx264, crf {CRF}, preset {PRESET}, yuv420p) at {size}, "
             "30 fps. Ratio = contender's wall time / framefarm's (above 1: framefarm is faster). "
             "Peak MB: the largest process of the contender's tree; worker MB: the largest "
             "process other than the one started (pool and framefarm workers).", ""]
    for name, measures in report.results.items():
        work = next(w for w in WORKLOADS if w.name == name)
        frames = measures[0].frames if measures else work.frames
        ff = report.get(name, "framefarm")
        lines += [f"## {name}: {work.sketch}, {frames} frame(s)", "",
                  "| contender | wall s | CPU s | peak MB | worker MB | ratio |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for m in measures:
            shown_wall = report.limits.get(name) if m.contender == "limit" else m.wall
            wall = shown_wall if shown_wall is not None else m.wall
            r = f"{ratio(wall, ff.wall):.2f}" if ff else ""
            label = "the limit (CPU s ÷ cores)" if m.contender == "limit" else m.contender
            worker = f"{m.worker_peak_mb:.0f}" if m.worker_peak_mb else ""
            lines.append(f"| {label} | {wall:.2f} | {m.cpu:.2f} | {m.peak_mb:.0f} | {worker} "
                         f"| {r} |")
        split = report.splits.get(name)
        if split:
            lines += ["", "The limit's CPU seconds, one thread: "
                      + ", ".join(f"{k} {v:.2f}" for k, v in split.items())
                      + f" (per frame {sum(split.values()) / frames * 1000:.1f} ms)."]
        lines.append("")
    if report.plan:
        lines += ["## planning 1,000,000 frames", "",
                  *(f"- {k}: {v * 1000:.1f} ms" for k, v in report.plan.items()), ""]
    if report.memory:
        lines += ["## worker memory", "",
                  *(f"- plasma, {n} frames, --per-job {report.memory_per_job.get(n, 'auto')}: "
                    f"largest worker peaked at {mb:.0f} MB" for n, mb in sorted(report.memory.items())),
                  "", "Chunks are pinned so that x264's own buffers (look-ahead and reference "
                  "frames, ~180 MB at 720p, full after a segment's first ~50 frames) are full in "
                  "both runs; frames per chunk and chunks per worker both double. A worker that "
                  "held its chunk's frames would grow by ~2.7 MB per 720p frame.", ""]
    for name, rounds in report.tracing.items():
        lines += tracing_markdown(name, rounds)
    lines += ["## targets (issue 3)", "", "| target | measured | |", "| --- | --- | --- |",
              *(f"| {t} | {v} | {'PASS' if ok else 'FAIL'} |" for t, v, ok in targets(report)), ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small frame counts: a smoke run")
    parser.add_argument("--only", action="append", metavar="WORKLOAD",
                        choices=[w.name for w in WORKLOADS] + ["plan", "memory", "tracing"]
                        + [f"tracing:{w}" for w in TRACING_WORKLOADS],
                        help="only this workload (repeatable); tracing: tracing's cost on "
                             f"{' and '.join(TRACING_WORKLOADS)}, tracing:WORKLOAD on one")
    parser.add_argument("--rounds", type=int, metavar="N",
                        help=f"rounds of the tracing comparison (default {ROUNDS}, "
                             f"{QUICK_ROUNDS} with --quick)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--out-video", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.contender:
        CONTENDERS[args.contender](Workload(**{**json.loads(args.workload), "contenders": ()}),
                                   args.out_video)
        return 0

    report = Report(load=os.getloadavg()[0])
    if report.load > 0.5:
        print(f"warning: load average {report.load:.2f}: something else is running, and every "
              "contender competes with it for the cores", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="framefarm-bench-") as tmp:
        for work in WORKLOADS:
            if args.only and work.name not in args.only:
                continue
            if args.quick:
                work = Workload(work.name, work.sketch, min(work.frames, 24), 640, 360,
                                contenders=work.contenders)
            measures = []
            for name in work.contenders:
                m = run_contender(name, work, Path(tmp))
                if name == "limit":
                    found = json.loads(m.note)
                    report.x264 = found.pop("x264")
                    report.limits[work.name] = found.pop("limit")
                    report.splits[work.name] = found
                measures.append(m)
                print(f"{work.name:<10} {name:<11} wall {m.wall:6.2f} s  cpu {m.cpu:6.2f} s  "
                      f"peak {m.peak_mb:5.0f} MB  worker {m.worker_peak_mb:5.0f} MB", flush=True)
            report.results[work.name] = measures
        if not args.only or "plan" in args.only:
            report.plan = plan_million()
            print(f"plan 1M    {report.plan}", flush=True)
        if not args.only or "memory" in args.only:
            for frames, per_job in QUICK_MEMORY_RUNS if args.quick else MEMORY_RUNS:
                width, height = (640, 360) if args.quick else (1280, 720)
                work = Workload("memory", "plasma.py", frames, width, height, per_job=per_job)
                m = run_contender("framefarm", work, Path(tmp) / str(frames))
                report.memory[frames] = m.worker_peak_mb
                report.memory_per_job[frames] = per_job
                print(f"memory     {frames} frames: worker peak {m.worker_peak_mb:.0f} MB",
                      flush=True)
        rounds = args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS)
        for work in WORKLOADS:
            if work.name not in TRACING_WORKLOADS or (args.only and "tracing" not in args.only
                                                      and f"tracing:{work.name}" not in args.only):
                continue
            if args.quick:
                work = Workload(work.name, work.sketch, min(work.frames, 24), 640, 360)
            report.tracing[work.name] = tracing_rounds(work, Path(tmp) / "tracing", rounds)
    text = markdown(report, quick=args.quick)
    args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
