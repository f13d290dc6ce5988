"""Tracing's cost: framefarm with tracing off, as default and exporting over OTLP/HTTP to a
receiver in this process, in alternating rounds (median of the rounds)."""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.harness import FRAMEFARM, ROOT, Measure, Workload, clean_env, load_average, run_contender

if str(ROOT) not in sys.path:  # the tests' OTLP receiver (tests/otlp.py) stands in for a collector
    sys.path.insert(0, str(ROOT))

from tests.otlp import OtlpReceiver

UNTRACED, TRACED, OTLP = "framefarm-untraced", FRAMEFARM, "framefarm-otlp"
TRACING_CONTENDERS = (UNTRACED, TRACED, OTLP)
TRACING_LABELS = {
    UNTRACED: "framefarm, tracing off (OTEL_SDK_DISABLED=true)",
    TRACED: "framefarm, default (spans stored with the run)",
    OTLP: "framefarm, exporting over OTLP/HTTP to 127.0.0.1",
}
TRACING_WORKLOADS = ("plasma", "circles")
ROUNDS, QUICK_ROUNDS = 5, 1
TRACING_BUDGET = 1.03
"""Tracing on may cost at most 3% wall time (traced wall / untraced wall, median of the rounds)."""


def framefarm_env(name: str, receiver: OtlpReceiver | None = None) -> dict[str, str]:
    """The environment of a framefarm contender: this one without the caller's tracing and
    framefarm settings, plus what the contender sets."""
    if name == UNTRACED:
        return clean_env(OTEL_SDK_DISABLED="true")
    if name == OTLP:
        if receiver is None:
            raise ValueError(f"{OTLP} needs an OTLP receiver")
        return clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
    return clean_env()


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


def run_traced(name: str, work: Workload, tmp: Path, *, receiver: OtlpReceiver | None,
               tag: str = "") -> Measure:
    """One tracing contender, measured, its video and its trace checked."""
    result = run_contender(name, work, tmp, tag=tag, env=framefarm_env(name, receiver))
    check_trace(name, result, Path(result.video).parent, receiver)
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
        run_traced(OTLP, warm, tmp, receiver=receiver, tag="-warm-up")
        for r in range(rounds):
            measures: dict[str, Measure] = {}
            for name in round_order(r):
                m = run_traced(name, work, tmp, receiver=receiver, tag=f"-{r}")
                measures[name] = m
                print(f"{work.name:<10} {name:<18} round {r + 1}/{rounds}: wall {m.wall:6.2f} s  "
                      f"cpu {m.cpu:6.2f} s  spans {m.spans}"
                      + (f" (exported {m.exported})" if name == OTLP else "")
                      + f"  load {load_average():.2f}", flush=True)
            results.append({name: measures[name] for name in TRACING_CONTENDERS})
    return results


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


def tracing_markdown(name: str, sketch: str, rounds: Sequence[dict[str, Measure]]) -> list[str]:
    """The tracing comparison of one workload: medians over the rounds, and their spread."""
    if not rounds:
        return []
    frames = rounds[0][UNTRACED].frames
    lines = [f"## tracing: {name} ({sketch}, {frames} frame(s)), {len(rounds)} alternating "
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


def tracing_targets(tracing: dict[str, list[dict[str, Measure]]]) -> list[tuple[str, str, bool]]:
    """Per traced workload: tracing on costs ≤ 3% wall time (default's and OTLP's medians)."""
    rows = []
    for w, rounds in tracing.items():
        if rounds:
            default, otlp = tracing_cost(rounds)
            rows.append((f"tracing on costs ≤ 3% wall time on {w}",
                         f"default {default:.3f}x, OTLP {otlp:.3f}x tracing off's wall "
                         f"(median of {len(rounds)} round(s))",
                         max(default, otlp) <= TRACING_BUDGET))
    return rows
