"""framefarm side by side with what users do today, and with the machine's limit.

    pip install -e '.[bench]'
    python bench/run.py            # every section, writes bench/RESULTS.md
    python bench/run.py --quick    # small frame counts, a smoke run
    python bench/run.py --only peers --only size --out /tmp/r.md

Every contender runs as its own subprocess (fresh imports, no shared caches) and is timed from
outside: wall time, CPU time of the whole process tree, and peak memory (the largest process).
Every video made is checked (frame count) so nobody wins by doing less. Sections:

- workloads (bench/contenders.py): naive, matplotlib, pool, framefarm and the machine's limit;
- peers (bench/peers.py): the five tools users pick, in alternating rounds with framefarm, with
  each video's size and luma PSNR;
- size (bench/size.py): framefarm's bytes and PSNR against one single-process encode;
- planning 1,000,000 frames (bench/planning.py), worker memory, and tracing's cost
  (bench/tracing_cost.py).

See bench/README.md for what each contender is and how each is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `bench` and the tests' OTLP receiver (tests/otlp.py)
    sys.path.insert(0, str(ROOT))

from bench.contenders import limit_seconds, x264_version  # noqa: E402
from bench.harness import FRAMEFARM, Measure, Workload, load_average, run_contender  # noqa: E402
from bench.peers import (  # noqa: E402
    PEER_ROUNDS,
    PEER_WORKLOADS,
    QUICK_PEER_ROUNDS,
    peer_rounds,
    peer_targets,
    peers_markdown,
)
from bench.planning import Planning, measure_planning, planning_markdown, planning_targets  # noqa: E402
from bench.size import (  # noqa: E402
    QUICK_SIZE_WORKERS,
    SIZE_WORKERS,
    SPLIT_BUDGET,
    SizeResult,
    size_markdown,
    size_runs,
    size_targets,
    size_workloads,
)
from bench.tracing_cost import (  # noqa: E402
    OTLP,
    QUICK_ROUNDS,
    ROUNDS,
    TRACED,
    TRACING_CONTENDERS,
    TRACING_WORKLOADS,
    UNTRACED,
    OtlpReceiver,
    check_trace,
    framefarm_env,
    round_order,
    tracing_cost,
    tracing_markdown,
    tracing_ratios,
    tracing_rounds,
    tracing_targets,
)

__all__ = [  # what tests/unit/test_bench.py and other callers import from here
    "OTLP", "TRACED", "TRACING_CONTENDERS", "UNTRACED", "Measure", "OtlpReceiver", "Report",
    "Workload", "best_here", "check_trace", "framefarm_env", "limit_seconds", "main",
    "markdown", "memory_flat", "ratio", "round_order", "targets", "tracing_cost",
    "tracing_ratios", "x264_version",
]

SPLIT = "framefarm-split"
"""framefarm with --size-budget SPLIT_BUDGET: a segment per worker where key frames are cheap."""
LIMITED = ("naive", "pool", "framefarm", SPLIT, "limit")
WORKLOADS = (
    Workload("plasma", "plasma.py", 240, contenders=(*LIMITED, "limit-every-core")),
    Workload("circles", "circles.py", 240, contenders=(*LIMITED, "limit-every-core")),
    Workload("wave_plot", "wave_plot.py", 120,
             contenders=("naive", "matplotlib", "pool", "framefarm", SPLIT, "limit",
                         "limit-every-core")),
    Workload("one_frame", "plasma.py", 1, contenders=("naive", "pool", "framefarm", "floor")),
    # naive is left out at 4K: Pillow's PNGs alone take ~1.5 s a frame there.
    Workload("plasma_4k", "plasma.py", 60, 3840, 2160,
             contenders=("pool", "framefarm", SPLIT, "limit", "limit-every-core")),
    # Other kinds of creative code, each against its own tool's way (bench/kinds.py).
    Workload("shader", "kaleidoscope.frag", 240, contenders=("moderngl-loop", "framefarm")),
    Workload("animation", "growing_line.py", 120, 640, 360, contenders=("ani-save", "framefarm")),
)
QUICK_SIZES = {"plasma_4k": (1280, 720, 12)}
"""--quick runs every workload at 640x360 and at most 24 frames, except these (width, height,
frames)."""

# The limit: framefarm's wall may be at most this many times the limit's.
LIMIT_BUDGETS = {"plasma": 1.08, "circles": 1.08, "plasma_4k": 1.08, "wave_plot": 1.2}
ONE_FRAME_BUDGET = 0.25
"""Seconds a 1-frame video may take, start to exit."""

# Worker memory: (frames, frames per job). Chunks are pinned at 60 and 120 frames because x264's
# own buffers (look-ahead and reference frames, ~180 MB at 720p) fill during a segment's first ~50
# frames: both runs are past that, and frames per chunk and chunks per worker both double.
MEMORY_RUNS = ((240, 60), (960, 120))
QUICK_MEMORY_RUNS = ((120, 60), (240, 120))
WORKER_MEMORY_BUDGET = 150.0
"""MB one framefarm worker may peak at, at 720p."""


# -- the report ---------------------------------------------------------------------------------


@dataclass
class Report:
    results: dict[str, list[Measure]] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)
    every_core: dict[str, float] = field(default_factory=dict)
    start: dict[str, float] = field(default_factory=dict)
    """Per workload: seconds from a fresh process's start until the sketch is set up (Python,
    NumPy, PyAV, framefarm and the sketch imported, setup run): serial in any run."""
    """Per workload: the busiest core's CPU seconds when the limit's loop runs on every core at
    once (bench/contenders.py limit_every_core)."""
    splits: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per workload: the limit's CPU seconds for the sketch, the conversion and x264."""
    sizes: dict[str, str] = field(default_factory=dict)
    """Per workload run at another size than the header's: WIDTHxHEIGHT."""
    x264: str = ""
    load: float = 0.0
    """The 1-minute load average when the run began (anything else running skews the numbers)."""
    planning: Planning | None = None
    memory: dict[int, float] = field(default_factory=dict)
    """framefarm's largest worker peak (MB) by frames in the video."""
    memory_per_job: dict[int, int] = field(default_factory=dict)
    memory_size: tuple[int, int] = (1280, 720)
    memory_parts: dict[str, float] = field(default_factory=dict)
    """A worker's peak (MB) after its imports, the sketch's first frame and the encode."""
    tracing: dict[str, list[dict[str, Measure]]] = field(default_factory=dict)
    """Per workload, each round of the tracing comparison: contender -> its measure."""
    peers: dict[str, tuple[Workload, list[dict[str, Measure]], dict[str, float]]] = field(
        default_factory=dict)
    """Per workload: its rounds (contender -> measure) and each contender's luma PSNR."""
    size: list[SizeResult] = field(default_factory=list)

    def get(self, workload: str, contender: str) -> Measure | None:
        return next((m for m in self.results.get(workload, []) if m.contender == contender), None)


def ratio(slow: float, fast: float) -> float:
    """How many times faster `fast` is than `slow`."""
    return slow / fast if fast > 0 else float("inf")


def best_here(every_core: float, start: float) -> float:
    """The least wall time this machine allows a run: the serial start before a first frame,
    then the limit's own loop on every core at once."""
    return start + every_core


def memory_flat(before: float, after: float) -> bool:
    """A worker's peak did not grow: within 10% or 15 MB (sampling and allocator noise)."""
    return after - before <= max(0.10 * before, 15.0)


def targets(report: Report) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for each of issues 3's and 12's targets that this run measured."""
    rows: list[tuple[str, str, bool]] = []

    def wall(w: str, c: str) -> float | None:
        m = report.get(w, c)
        return m.wall if m else None

    ff, naive = wall("plasma", FRAMEFARM), wall("plasma", "naive")
    if ff and naive:
        rows.append(("≥ 5x faster than naive on plasma", f"{ratio(naive, ff):.2f}x",
                     ratio(naive, ff) >= 5))
    ff, mpl = wall("wave_plot", FRAMEFARM), wall("wave_plot", "matplotlib")
    if ff and mpl:
        rows.append(("≥ 1.8x faster than matplotlib's own on wave_plot", f"{ratio(mpl, ff):.2f}x",
                     ratio(mpl, ff) >= 1.8))
    for w in report.results:
        ff, pool = wall(w, FRAMEFARM), wall(w, "pool")
        if ff and pool:
            rows.append((f"not slower than hand-written parallel on {w}",
                         f"{ratio(pool, ff):.2f}x", ratio(pool, ff) >= 1.0))
    for w, budget in LIMIT_BUDGETS.items():
        ff, limit = wall(w, FRAMEFARM), report.limits.get(w)
        if ff and limit:
            every, start = report.every_core.get(w), report.start.get(w, 0.0)
            seen = f"{ff / limit:.2f}x the limit" + (
                f" (the limit's own loop on every core at once: {every / limit:.2f}x; with the "
                f"{start:.2f} s start before a first frame, the best this machine allows: "
                f"{best_here(every, start) / limit:.2f}x; framefarm "
                f"{ff / best_here(every, start):.2f}x that)" if every else "")
            split = wall(w, SPLIT)
            if split:
                seen += f"; with --size-budget {SPLIT_BUDGET:g}: {split / limit:.2f}x"
            rows.append((f"wall ≤ {budget}x the limit on {w}", seen, ff / limit <= budget))
    one, floor = wall("one_frame", FRAMEFARM), wall("one_frame", "floor")
    if one:
        seen = f"{one:.2f} s" + (f" (one process importing NumPy and PyAV and encoding the frame: "
                                 f"{floor:.2f} s)" if floor else "")
        rows.append((f"1-frame video ≤ {ONE_FRAME_BUDGET} s wall", seen, one <= ONE_FRAME_BUDGET))
    rows += planning_targets(report.planning)
    if len(report.memory) == 2:
        (n1, m1), (n2, m2) = sorted(report.memory.items())
        rows.append((f"worker peak memory flat from {n1} to {n2} frames",
                     f"{m1:.0f} MB → {m2:.0f} MB", memory_flat(m1, m2)))
    if report.memory:
        width, height = report.memory_size
        worst = max(report.memory.values())
        rows.append((f"≤ {WORKER_MEMORY_BUDGET:.0f} MB per worker at {height}p ({width}x{height})",
                     f"{worst:.0f} MB", worst <= WORKER_MEMORY_BUDGET))
    rows += tracing_targets(report.tracing)
    for w, (_, rounds, _) in report.peers.items():
        rows += peer_targets(w, rounds)
    rows += size_targets(report.size)
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
            f"{platform.python_version()}, PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info})"
            f"{_tool_versions()}")


def _tool_versions() -> str:
    """The peers' own versions, where installed."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in ("imageio", "imageio-ffmpeg", "moviepy"):
        with contextlib.suppress(PackageNotFoundError):
            found.append(f"{package} {version(package)}")
    try:
        import imageio_ffmpeg

        found.append(f"ffmpeg {imageio_ffmpeg.get_ffmpeg_version()} (imageio-ffmpeg's)")
    except ImportError:
        pass
    return ", " + ", ".join(found) if found else ""


def _sketch(name: str) -> str:
    return next((w.sketch for w in WORKLOADS if w.name == name), f"{name}.py")


def workload_markdown(report: Report, name: str, measures: list[Measure]) -> list[str]:
    """One workload's table: every contender's wall, CPU and peaks, and the limit's split."""
    frames = measures[0].frames if measures else 0
    size = f", {report.sizes[name]}" if name in report.sizes else ""
    ff = report.get(name, FRAMEFARM)
    lines = [f"## {name}: {_sketch(name)}, {frames} frame(s){size}", "",
             "| contender | wall s | CPU s | peak MB | worker MB | ratio |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for m in measures:
        shown_wall = {"limit": report.limits.get(name),
                      "limit-every-core": report.every_core.get(name)}.get(m.contender, m.wall)
        wall = shown_wall if shown_wall is not None else m.wall
        r = f"{ratio(wall, ff.wall):.2f}" if ff else ""
        label = _LABELS.get(m.contender, m.contender)
        worker = f"{m.worker_peak_mb:.0f}" if m.worker_peak_mb else ""
        lines.append(f"| {label} | {wall:.2f} | {m.cpu:.2f} | {m.peak_mb:.0f} | {worker} | {r} |")
    every, start = report.every_core.get(name), report.start.get(name)
    if every is not None and start is not None and ff:
        best = best_here(every, start)
        lines.append(f"| the best this machine allows (the {start:.2f} s start before a first "
                     f"frame, then the loop on every core) | {best:.2f} |  |  |  | "
                     f"{ratio(best, ff.wall):.2f} |")
    split = report.splits.get(name)
    if split:
        lines += ["", "The limit's CPU seconds, one thread: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in split.items())
                  + f" (per frame {sum(split.values()) / frames * 1000:.1f} ms)."]
    return [*lines, ""]


_LABELS = {"limit": "the limit (CPU s ÷ cores)",
           "limit-every-core": "the limit's loop on every core at once (busiest core's CPU s)",
           "floor": "floor (one process: import, draw, encode)",
           SPLIT: f"framefarm --size-budget {SPLIT_BUDGET:g} (a segment per worker where key "
                  "frames are cheap)"}


def markdown(report: Report, *, quick: bool) -> str:
    size = "640x360" if quick else "1280x720"
    lines = ["# framefarm benchmark results", "",
             f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {machine()}"
             + (f", {report.x264}" if report.x264 else "")
             + f" · load average {report.load:.2f} at the start" + (" · **quick run**" if quick else ""),
             "", f"All videos H.264 (libx264, crf 18, preset fast, yuv420p) at {size} unless a "
             "section says otherwise, 30 fps. Ratio = contender's wall time / framefarm's (above "
             "1: framefarm is faster). Peak MB: the largest process of the contender's tree; "
             "worker MB: the largest process other than the one started (pool and framefarm "
             "workers).", ""]
    for name, measures in report.results.items():
        lines += workload_markdown(report, name, measures)
    for (work, rounds, quality) in report.peers.values():
        lines += peers_markdown(work, rounds, quality)
    lines += size_markdown(report.size)
    lines += planning_markdown(report.planning)
    if report.memory:
        width, height = report.memory_size
        lines += ["## worker memory", "",
                  *(f"- plasma at {width}x{height}, {n} frames, --per-job "
                    f"{report.memory_per_job.get(n, 'auto')}: largest worker peaked at {mb:.0f} MB"
                    for n, mb in sorted(report.memory.items())),
                  "", "Chunks are pinned so that x264's own buffers (look-ahead and reference "
                  "frames, ~180 MB at 720p, full after a segment's first ~50 frames) are full in "
                  "both runs; frames per chunk and chunks per worker both double. A worker that "
                  "held its chunk's frames would grow by ~2.7 MB per 720p frame.", ""]
        parts = report.memory_parts
        if parts:
            lines += ["Where it goes, one process peaking (VmHWM) step by step: "
                      f"{parts['imports']:.0f} MB after importing Python, NumPy, PyAV and "
                      f"framefarm; {parts['sketch']:.0f} MB after plasma's setup and first "
                      f"frame; {parts['encoded']:.0f} MB after encoding 80 frames through "
                      "framefarm's SegmentWriter with a worker's 2 x264 frame threads, so x264 "
                      f"holds {parts['encoded'] - parts['sketch']:.0f} MB (its look-ahead and "
                      "reference frames, one set per frame thread).", ""]
    for name, rounds in report.tracing.items():
        lines += tracing_markdown(name, _sketch(name), rounds)
    lines += ["## targets (issues 3 and 12)", "", "| target | measured | |", "| --- | --- | --- |",
              *(f"| {t} | {v} | {'PASS' if ok else 'FAIL'} |" for t, v, ok in targets(report)), ""]
    return "\n".join(lines)


# -- running the sections -----------------------------------------------------------------------


def quick_workload(work: Workload) -> Workload:
    width, height, frames = QUICK_SIZES.get(work.name, (640, 360, 24))
    return replace(work, frames=min(work.frames, frames), width=width, height=height)


def run_workloads(report: Report, tmp: Path, *, only: Sequence[str], quick: bool) -> None:
    for work in WORKLOADS:
        if only and work.name not in only:
            continue
        if quick:
            work = quick_workload(work)
        if (work.width, work.height) != ((640, 360) if quick else (1280, 720)):
            report.sizes[work.name] = f"{work.width}x{work.height}"
        measures = []
        for name in work.contenders:
            m = run_contender(name, replace(work, size_budget=SPLIT_BUDGET) if name == SPLIT
                              else work, tmp)
            if name == "limit":
                found = json.loads(m.note)
                report.x264 = found.pop("x264")
                report.limits[work.name] = found.pop("limit")
                report.splits[work.name] = found
            elif name == "limit-every-core":
                found = json.loads(m.note)
                report.every_core[work.name] = found["limit"]
                report.start[work.name] = found["start"]
            measures.append(m)
            print(f"{work.name:<10} {name:<11} wall {m.wall:6.2f} s  cpu {m.cpu:6.2f} s  "
                  f"peak {m.peak_mb:5.0f} MB  worker {m.worker_peak_mb:5.0f} MB", flush=True)
        report.results[work.name] = measures


def run_memory(report: Report, tmp: Path, *, quick: bool) -> None:
    width, height = (640, 360) if quick else (1280, 720)
    report.memory_size = (width, height)
    for frames, per_job in QUICK_MEMORY_RUNS if quick else MEMORY_RUNS:
        work = Workload("memory", "plasma.py", frames, width, height, per_job=per_job)
        m = run_contender(FRAMEFARM, work, tmp / str(frames))
        report.memory[frames] = m.worker_peak_mb
        report.memory_per_job[frames] = per_job
        print(f"memory     {frames} frames: worker peak {m.worker_peak_mb:.0f} MB", flush=True)
    work = Workload("memory-parts", "plasma.py", 80, width, height)
    report.memory_parts = json.loads(run_contender("memory-parts", work, tmp).note)
    print(f"memory     parts {report.memory_parts}", flush=True)


def wanted(only: Sequence[str], section: str, name: str, default: Sequence[str]) -> bool:
    """Whether `section` runs on workload `name`: `section` alone selects `default`,
    `section:name` that one workload."""
    if not only:
        return name in default
    return f"{section}:{name}" in only or (section in only and name in default)


def compile_framefarm() -> None:
    """Byte-compile framefarm's own modules, as `pip install` does for an installed package. An
    editable install (this checkout) leaves that to the first import, and with
    PYTHONDONTWRITEBYTECODE set (as on the project's CI machine) every framefarm process would
    compile its ~40 modules again, ~80 ms a process that no installed copy pays."""
    import compileall

    import framefarm

    compileall.compile_dir(str(Path(framefarm.__file__).parent), quiet=1)


def main(argv: Sequence[str] | None = None) -> int:
    workloads = [w.name for w in WORKLOADS]
    size_names = [w.name for w in size_workloads(quick=False)]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small frame counts: a smoke run")
    parser.add_argument("--only", action="append", metavar="SECTION",
                        choices=[*workloads, "plan", "memory", "tracing", "peers", "size",
                                 *(f"tracing:{w}" for w in TRACING_WORKLOADS),
                                 *(f"peers:{w}" for w in ("plasma", "circles", "wave_plot")),
                                 *(f"size:{w}" for w in size_names)],
                        help="only this (repeatable): a workload (" + ", ".join(workloads)
                             + "), plan, memory, tracing[:W], peers[:W], size[:W]")
    parser.add_argument("--rounds", type=int, metavar="N",
                        help=f"rounds of the alternating comparisons (tracing {ROUNDS}, peers "
                             f"{PEER_ROUNDS}; {QUICK_ROUNDS} with --quick)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args(argv)
    only: list[str] = args.only or []

    compile_framefarm()
    report = Report(load=load_average())
    if report.load > 0.5:
        print(f"warning: load average {report.load:.2f}: something else is running, and every "
              "contender competes with it for the cores", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="framefarm-bench-") as folder:
        tmp = Path(folder)
        run_workloads(report, tmp, only=only, quick=args.quick)
        for work in WORKLOADS:
            if wanted(only, "peers", work.name, PEER_WORKLOADS):
                work = quick_workload(work) if args.quick else work
                rounds, quality = peer_rounds(work, tmp / "peers", args.rounds or (
                    QUICK_PEER_ROUNDS if args.quick else PEER_ROUNDS), warm_up=not args.quick)
                report.peers[work.name] = (work, rounds, quality)
        for work in size_workloads(quick=args.quick):
            if wanted(only, "size", work.name, size_names):
                report.size.append(size_runs(
                    work, tmp / "size", workers=QUICK_SIZE_WORKERS if args.quick else SIZE_WORKERS,
                    short=not args.quick and work.frames < 1000))
        if not only or "plan" in only:
            report.planning = measure_planning(tmp / "plan")
            print(f"plan 1M    {report.planning}", flush=True)
        if not only or "memory" in only:
            run_memory(report, tmp, quick=args.quick)
        for work in WORKLOADS:
            if wanted(only, "tracing", work.name, TRACING_WORKLOADS):
                work = quick_workload(work) if args.quick else work
                report.tracing[work.name] = tracing_rounds(work, tmp / "tracing", args.rounds or (
                    QUICK_ROUNDS if args.quick else ROUNDS))
    text = markdown(report, quick=args.quick)
    args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
