"""Segments without a size penalty: framefarm's video against one single-process encode.

For every example sketch, the **reference** is one process encoding every frame as one x264
stream (PyAV, x264's default frame threads, framefarm's crf, preset and BT.709 conversion:
bench/contenders.py `reference`). framefarm renders the same frames with `framefarm render` at
several worker counts with its own (auto) chunking, and once with short chunks forced
(`--per-job 8`) to show what segmenting costs. Each video's size is compared with the
reference's and its luma PSNR measured against the sketch's frames (bench/quality.py).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.harness import EXAMPLES, FRAMEFARM, Measure, Workload, load_average, run_contender
from bench.quality import luma_psnr

SIZE_SKETCHES = ("plasma.py", "circles.py", "wave_plot.py", "tracker.py")
SIZE_WORKERS, QUICK_SIZE_WORKERS = (2, 16, 64), (2,)
SHORT_CHUNK = 8
"""Frames per job of the forced-short-chunks run (what many segments cost)."""
SPLIT_BUDGET = 2.0
"""--size-budget of the runs that trade bytes for speed (information, not a target)."""
LONG_PLASMA = 2400
"""The full run also measures plasma at this many frames (longer chunks under auto sizing)."""
BYTES_BUDGET = 1.05
REFERENCE = "reference"


@dataclass
class SizeRun:
    """One encode of a size workload."""

    label: str
    measure: Measure
    workers: int = 0
    per_job: int = 0
    """Forced frames per job (0: framefarm's auto chunking)."""
    size_budget: float = 0.0
    """framefarm's --size-budget (0: none, its default)."""
    chunks: int = 1
    frames_per_chunk: int = 0
    psnr: float = 0.0


@dataclass
class SizeResult:
    """The reference and every framefarm run of one workload."""

    work: Workload
    runs: list[SizeRun] = field(default_factory=list)

    @property
    def reference(self) -> SizeRun:
        return self.runs[0]


def size_workloads(*, quick: bool) -> list[Workload]:
    """Every example at its own defaults (FRAMES, WIDTH, HEIGHT, FPS); with `quick`, 24 frames
    at 640x360; the full run adds plasma at LONG_PLASMA frames."""
    from framefarm.sketch import load_sketch

    found = []
    for sketch in SIZE_SKETCHES:
        d = load_sketch(str(EXAMPLES / sketch)).defaults
        frames, width, height = d.frames or 240, d.width or 1280, d.height or 720
        fps = int(float(d.fps or 30))
        if quick:
            frames, width, height = min(frames, 24), 640, 360
        found.append(Workload(Path(sketch).stem, sketch, frames, width, height, fps, contenders=()))
    if not quick:
        plasma = found[0]
        found.append(replace(plasma, name=f"{plasma.name}_{LONG_PLASMA}", frames=LONG_PLASMA))
    return found


def planned_chunks(folder: Path) -> tuple[int, int]:
    """(chunks, frames per chunk) of the framefarm run under `folder`, from its plan.json."""
    plans = list((folder / "framefarm-data" / "runs").glob("*/plan.json"))
    if len(plans) != 1:
        raise SystemExit(f"expected one framefarm run under {folder}, found {len(plans)}")
    plan = json.loads(plans[0].read_text())
    total, per_job = int(plan["total_frames"]), int(plan["frames_per_job"])
    return math.ceil(total / per_job), per_job


def size_runs(work: Workload, tmp: Path, *, workers: tuple[int, ...],
              short: bool = True) -> SizeResult:
    """The reference, framefarm at each of `workers` (auto chunking) and, with `short`, at
    --workers 2 --per-job SHORT_CHUNK; then every video's luma PSNR. Videos and framefarm's
    storage are removed once measured."""
    result = SizeResult(work)
    ref = run_contender(REFERENCE, work, tmp)
    result.runs.append(SizeRun("reference: one process, one stream (PyAV, x264 frame threads)",
                               ref, frames_per_chunk=work.frames))
    settings = [(w, 0, 0.0) for w in workers]
    if short:  # and the two that are not targets: bytes traded for speed, short chunks forced
        settings += [(w, 0, SPLIT_BUDGET) for w in workers[:2]] + [(workers[0], SHORT_CHUNK, 0.0)]
    for w, per_job, budget in settings:
        variant = replace(work, workers=w, per_job=per_job, size_budget=budget)
        tag = f"-w{w}" + (f"-k{per_job}" if per_job else "") + (f"-b{budget:g}" if budget else "")
        m = run_contender(FRAMEFARM, variant, tmp, tag=tag)
        folder = Path(m.video).parent
        chunks, per_chunk = planned_chunks(folder)
        shutil.rmtree(folder / "framefarm-data")
        label = f"framefarm --workers {w}" + (
            f" --per-job {per_job} (short chunks forced)" if per_job else
            f" --size-budget {budget:g} (speed for bytes)" if budget else " (auto chunks)")
        result.runs.append(SizeRun(label, m, workers=w, per_job=per_job, chunks=chunks,
                                   frames_per_chunk=per_chunk, size_budget=budget))
    for run in result.runs:
        print(f"{work.name:<12} {run.label[:40]:<40} {run.chunks:>4} chunk(s)  "
              f"{run.measure.bytes / 1e6:8.2f} MB  {run.measure.bytes / ref.bytes:6.3f}x  "
              f"wall {run.measure.wall:6.2f} s  load {load_average():.2f}", flush=True)
    quality = luma_psnr(work, {str(i): run.measure.video for i, run in enumerate(result.runs)})
    for i, run in enumerate(result.runs):
        run.psnr = quality[str(i)]
        Path(run.measure.video).unlink()
    return result


def db(psnr: float) -> float:
    """PSNR as the tables show it and the targets compare it: to 0.01 dB."""
    return round(psnr, 2)


def size_ok(run: SizeRun, reference: SizeRun) -> bool:
    """Within BYTES_BUDGET of the reference's bytes, with a PSNR at least the reference's (to
    the 0.01 dB shown: a thousandth of a dB is no difference anyone can see or measure twice)."""
    return (run.measure.bytes <= BYTES_BUDGET * reference.measure.bytes
            and db(run.psnr) >= db(reference.psnr))


def size_markdown(results: list[SizeResult]) -> list[str]:
    """One table per workload, then every workload's bytes ratios side by side."""
    if not results:
        return []
    lines: list[str] = []
    for result in results:
        w, ref = result.work, result.reference
        lines += [f"## size: {w.name} ({w.sketch}, {w.frames} frame(s), {w.width}x{w.height})", "",
                  "| encode | chunks x frames | MB | bytes vs reference | luma PSNR dB "
                  "| PSNR vs reference dB | wall s | worker MB | ≤ 1.05x bytes, PSNR ≥ |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for run in result.runs:
            m = run.measure
            verdict = "" if run is ref or run.per_job or run.size_budget else (
                "PASS" if size_ok(run, ref) else "FAIL")
            worker = f"{m.worker_peak_mb:.0f}" if m.worker_peak_mb else ""
            lines.append(f"| {run.label} | {run.chunks} x {run.frames_per_chunk} "
                         f"| {m.bytes / 1e6:.3f} | {m.bytes / ref.measure.bytes:.4f} "
                         f"| {db(run.psnr):.2f} | {db(run.psnr) - db(ref.psnr):+.2f} | {m.wall:.2f} "
                         f"| {worker} | {verdict} |")
        lines.append("")
    workers = sorted({r.workers for res in results for r in res.runs if r.workers and not r.per_job
                      and not r.size_budget})
    split = sorted({r.workers for res in results for r in res.runs if r.size_budget})
    header = [f"--workers {n}" for n in workers] + [
        f"--workers {n} --size-budget {SPLIT_BUDGET:g}" for n in split] + [
        f"--per-job {SHORT_CHUNK}"]
    lines += ["## size: bytes vs the reference, every workload", "",
              "| workload | " + " | ".join(header) + " |",
              "| --- |" + " ---: |" * len(header)]
    for result in results:
        ref = result.reference
        cells = []
        for n in workers:
            run = next((r for r in result.runs if r.workers == n and not r.per_job
                        and not r.size_budget), None)
            cells.append(_cell(run, ref))
        for n in split:
            run = next((r for r in result.runs if r.workers == n and r.size_budget), None)
            cells.append(_cell(run, ref))
        short = next((r for r in result.runs if r.per_job), None)
        cells.append(_cell(short, ref))
        lines.append(f"| {result.work.name} ({result.work.frames}) | " + " | ".join(cells) + " |")
    return [*lines, "", "Each cell: framefarm's bytes / the reference's (PSNR difference in dB); "
            "columns with --workers use framefarm's own chunking (with --size-budget: "
            "trading bytes for speed, not a target), the last forces "
            f"{SHORT_CHUNK} frames per chunk at --workers 2. The reference is one process "
            "encoding the whole video as one stream with the same crf, preset and colours.", ""]


def _cell(run: SizeRun | None, ref: SizeRun) -> str:
    if run is None:
        return ""
    return f"{run.measure.bytes / ref.measure.bytes:.4f}x ({db(run.psnr) - db(ref.psnr):+.2f} dB)"


def size_targets(results: list[SizeResult]) -> list[tuple[str, str, bool]]:
    """One row per workload and worker count (auto chunking): ≤ 1.05x bytes, PSNR ≥ reference."""
    rows = []
    for result in results:
        ref = result.reference
        for run in result.runs[1:]:
            if run.per_job or run.size_budget:
                continue
            rows.append((f"≤ {BYTES_BUDGET}x the reference's bytes and PSNR ≥ on "
                         f"{result.work.name} ({result.work.frames} frames) at --workers "
                         f"{run.workers}",
                         f"{run.measure.bytes / ref.measure.bytes:.4f}x bytes, "
                         f"{db(run.psnr):.2f} vs {db(ref.psnr):.2f} dB", size_ok(run, ref)))
    return rows
