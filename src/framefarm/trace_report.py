"""What a run's trace says: a waterfall of its jobs, the critical path, the slowest chunk and
frame, and where the time went. Pure functions from the stored spans (`trace_store.load_spans`) to a
JSON-safe report, and from the report to text for a terminal.

Only job spans (`plan`, `render`, `encode`) and their descendants are counted; botocore's spans
(`S3.PutObject` …) sit inside `storage.*` / `joblog.*` spans and are never counted twice.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["build_report", "render_text"]

JOB_KINDS = ("plan", "render", "encode")
CATEGORIES = ("render", "encode", "storage", "job log", "waiting", "other")
ENCODE_PHASES = ("flush", "concat", "verify")
"""Spans that are encoding: a render job's x264 flush, the encode job's two phases."""
SHOWN_RENDERS = 10
"""Render attempts drawn one by one when a run has too many to draw them all."""

Span = Mapping[str, Any]
Row = Mapping[str, Any]
"""One job of a report."""


@dataclass(frozen=True, slots=True)
class _Job:
    label: str
    kind: str
    attempt: int
    chunk: int | None
    start: float
    end: float
    host: str
    status: str
    frames: int | None


def _attr(span: Span, name: str, default: Any = None) -> Any:
    return (span.get("attributes") or {}).get(name, default)


def _jobs(spans: Sequence[Span]) -> tuple[list[_Job], dict[str, _Job]]:
    """Every job attempt by start, and each job span's id mapped to its attempt."""
    job_spans = sorted((s for s in spans if s["name"] in JOB_KINDS), key=lambda s: (s["start"], s["end"]))
    names = [str(_attr(s, "framefarm.job", s["name"])) for s in job_spans]
    attempts_of = Counter(names)
    seen: Counter[str] = Counter()
    jobs, by_span = [], {}
    for span, name in zip(job_spans, names, strict=True):
        seen[name] += 1
        attempt = int(_attr(span, "framefarm.attempt", seen[name]))
        first, stop = _attr(span, "framefarm.frame_start"), _attr(span, "framefarm.frame_stop")
        chunk = _attr(span, "framefarm.chunk")
        job = _Job(label=f"{name} #{attempt}" if attempts_of[name] > 1 else name, kind=span["name"],
                   attempt=attempt, chunk=None if chunk is None else int(chunk),
                   start=float(span["start"]), end=float(span["end"]),
                   host=str(_attr(span, "host.name") or (span.get("resource") or {}).get("host.name", "")),
                   status=str(span.get("status", "UNSET")),
                   frames=None if first is None or stop is None else int(stop) - int(first))
        jobs.append(job)
        by_span[span["span_id"]] = job
    return jobs, by_span


def _critical_path(jobs: list[_Job]) -> list[_Job]:
    """Back from the job that ended last: each step, the job that ended latest before the current
    one started (when clocks overlap and none did, the one that ended latest of those that
    started earlier)."""
    if not jobs:
        return []
    by_end = sorted(jobs, key=lambda j: (j.end, j.start))
    ends = [j.end for j in by_end]
    current = by_end[-1]
    path, on_path = [current], {id(current)}
    while True:
        before = [j for j in by_end[:bisect.bisect_right(ends, current.start)] if id(j) not in on_path][-1:]
        before = before or [j for j in by_end if j.start < current.start and id(j) not in on_path][-1:]
        if not before:
            return path[::-1]
        current = before[0]
        path.append(current)
        on_path.add(id(current))


def _ancestors(span: Span, by_id: Mapping[str, Span]) -> list[Span]:
    found: list[Span] = []
    parent = span.get("parent_id")
    while isinstance(parent, str) and parent in by_id and len(found) < 100:  # a corrupt cycle ends
        found.append(by_id[parent])
        parent = by_id[parent].get("parent_id")
    return found


def _round(value: float) -> float:
    return round(value, 6)


def build_report(spans: Sequence[Span], *, run_id: str = "") -> dict[str, Any]:
    """The report of one run's spans, a JSON-safe dict; times in seconds, offsets from the run's start.

    `jobs`: every plan/render/encode attempt by start. `critical_path`: its jobs and how the wall
    time splits into plan/render/encode, waiting (gaps before its jobs) and other (after the last).
    `breakdown`: the seconds of every job by what they went on, plus the critical path's waits;
    its "other" is job time in none of the categories.
    """
    start = min((float(s["start"]) for s in spans), default=0.0)
    wall = max((float(s["end"]) for s in spans), default=start) - start
    jobs, job_by_span = _jobs(spans)
    by_id = {s["span_id"]: s for s in spans}

    # The critical path covers the whole run: waits before each of its jobs, whatever follows the
    # last one (the CLI collecting the result) is "other".
    path = _critical_path(jobs)
    split = dict.fromkeys((*JOB_KINDS, "waiting", "other"), 0.0)
    steps, cursor = [], start
    for job in path:
        wait = max(0.0, job.start - cursor)
        split["waiting"] += wait
        split[job.kind] += max(0.0, job.end - max(job.start, cursor))
        steps.append({"job": job.label, "kind": job.kind, "wait_before": _round(wait),
                      "offset": _round(job.start - start), "duration": _round(job.end - job.start)})
        cursor = max(cursor, job.end)
    split["other"] = max(0.0, start + wall - cursor)

    # Where time went: measured frame times, outermost storage/job-log calls, the encode phases
    # less the storage/job-log calls inside them.
    spent = dict.fromkeys(CATEGORIES, 0.0)
    slowest_frame: dict[str, Any] | None = None
    for span in spans:
        name, seconds = span["name"], float(span["end"]) - float(span["start"])
        above = _ancestors(span, by_id)
        owner = next((job_by_span[a["span_id"]] for a in above if a["span_id"] in job_by_span), None)
        if owner is None:
            continue
        if name == "frame":
            render_s = float(_attr(span, "framefarm.render_seconds", 0.0))
            encode_s = float(_attr(span, "framefarm.encode_seconds", 0.0))
            spent["render"] += render_s
            spent["encode"] += encode_s
            if slowest_frame is None or seconds > slowest_frame["duration"]:
                slowest_frame = {"frame": _attr(span, "framefarm.frame"), "chunk": owner.chunk,
                                 "job": owner.label, "duration": seconds,
                                 "render_seconds": render_s, "encode_seconds": encode_s}
        elif name in ENCODE_PHASES:
            spent["encode"] += seconds
        for prefix, category in (("storage.", "storage"), ("joblog.", "job log")):
            if name.startswith(prefix) and not any(a["name"].startswith(prefix) for a in above):
                spent[category] += seconds
                if any(a["name"] in ENCODE_PHASES for a in above):
                    spent["encode"] -= seconds
    job_seconds = sum(j.end - j.start for j in jobs)
    spent["waiting"] = split["waiting"]
    spent["other"] = max(0.0, job_seconds - sum(spent[c] for c in CATEGORIES[:4]))

    renders = [j for j in jobs if j.kind == "render"]
    slowest = max(renders, key=lambda j: j.end - j.start, default=None)
    if run_id == "":
        run_id = str(next((_attr(s, "framefarm.run_id") for s in spans if _attr(s, "framefarm.run_id")), ""))
    return {
        "run_id": run_id,
        "trace_id": next((s.get("trace_id", "") for s in spans), ""),
        "start": start,
        "wall_seconds": _round(wall),
        "spans": len(spans),
        "jobs": [{"job": j.label, "kind": j.kind, "attempt": j.attempt, "chunk": j.chunk,
                  "offset": _round(j.start - start), "duration": _round(j.end - j.start),
                  "host": j.host, "status": j.status, "frames": j.frames} for j in jobs],
        "failed_attempts": sum(j.status == "ERROR" for j in jobs),
        "retried_chunks": sorted({j.chunk for j in renders if j.attempt > 1 and j.chunk is not None}),
        "critical_path": {"jobs": [s["job"] for s in steps], "steps": steps,
                          "seconds": {k: _round(v) for k, v in split.items()}},
        "slowest_chunk": None if slowest is None else {
            "job": slowest.label, "chunk": slowest.chunk, "attempt": slowest.attempt,
            "duration": _round(slowest.end - slowest.start), "frames": slowest.frames,
            "host": slowest.host, "status": slowest.status},
        "slowest_frame": None if slowest_frame is None else {
            k: _round(v) if isinstance(v, float) else v for k, v in slowest_frame.items()},
        "job_seconds": _round(job_seconds),
        "breakdown": {k: _round(v) for k, v in spent.items()},
    }


# -- text --------------------------------------------------------------------------------------------

def _secs(seconds: float) -> str:
    if seconds < 0.1:
        return f"{seconds * 1000:.1f} ms"
    if seconds >= 120:
        whole = round(seconds)
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


def _columns(offset: float, duration: float, wall: float, width: int) -> tuple[int, int]:
    """The bar's first column and the column after its last: at least one column wide."""
    if wall <= 0:
        return 0, width
    first = min(width - 1, int(offset / wall * width))
    return first, max(first + 1, min(width, math.ceil((offset + duration) / wall * width)))


def _bar(job: Row, wall: float, width: int) -> str:
    first, stop = _columns(job["offset"], job["duration"], wall, width)
    fill = "▒" if job["status"] == "ERROR" else "█"
    return " " * first + fill * (stop - first) + " " * (width - stop)


def _density(jobs: Sequence[Row], wall: float, width: int) -> str:
    """One bar for many jobs: each column shaded by how many of them run then."""
    counts = [0] * width
    for job in jobs:
        first, stop = _columns(job["offset"], job["duration"], wall, width)
        for column in range(first, stop):
            counts[column] += 1
    peak = max(counts, default=0) or 1
    return "".join(" ░▒▓█"[math.ceil(c / peak * 4)] for c in counts)


def fold_renders(jobs: Sequence[Row], max_jobs: int) -> tuple[list[Row], list[Row]]:
    """(jobs drawn one by one, render attempts folded into one density bar)."""
    renders = [j for j in jobs if j["kind"] == "render"]
    if len(renders) <= max_jobs:
        return list(jobs), []
    retried = {j["chunk"] for j in renders if j["attempt"] > 1}
    picked = [j for j in renders if j["status"] == "ERROR" or j["chunk"] in retried][:SHOWN_RENDERS // 2]
    ids = {id(j) for j in picked}
    for job in sorted(renders, key=lambda j: -j["duration"]):
        if len(ids) >= SHOWN_RENDERS:
            break
        ids.add(id(job))
    return ([j for j in jobs if j["kind"] != "render" or id(j) in ids],
            [j for j in renders if id(j) not in ids])


def _path_text(labels: Sequence[str], keep: int = 8) -> str:
    if len(labels) > keep:
        labels = [*labels[:3], f"… {len(labels) - keep + 1} more …", *labels[-(keep - 4):]]
    return " → ".join(labels)


def render_text(report: Mapping[str, Any], *, width: int = 50, max_jobs: int = 40) -> str:
    """The report for a terminal: a waterfall with bars `width` columns wide (above `max_jobs`
    render attempts, the slowest and failed ones plus one bar for the rest), the critical path,
    the slowest chunk and frame, and where the time went."""
    wall, jobs = report["wall_seconds"], report["jobs"]
    renders = [j for j in jobs if j["kind"] == "render"]
    frames = sum(j["frames"] or 0 for j in renders if j["status"] != "ERROR")
    failed = f" ({report['failed_attempts']} failed)" if report["failed_attempts"] else ""
    lines = [f"run {report['run_id']}: {_secs(wall)} wall, {len(renders)} render attempts{failed}, "
             f"{frames} frames, {report['spans']} spans"]
    if not jobs:
        return "\n".join([*lines, "no plan, render or encode spans in this trace"]) + "\n"
    shown, folded = fold_renders(jobs, max_jobs)
    label_width = max(len(j["job"]) for j in shown) + 1
    if folded:
        label_width = max(label_width, len(f"+{len(folded)} renders") + 1)
    lines.append(f"{'':<{label_width}} 0 s{_secs(wall):>{max(width - 1, 1)}}")
    rows = []
    for job in shown:
        notes = "  ".join(x for x in ("FAILED" if job["status"] == "ERROR" else "",
                                       f"{job['frames']} frames" if job["frames"] is not None else "",
                                       job["host"][:24]) if x)
        rows.append((job["offset"], f"{job['job']:<{label_width}}|{_bar(job, wall, width)}| "
                                    f"{_secs(job['duration']):>8}  {notes}"))
    if folded:
        durations = [j["duration"] for j in folded]
        rows.append((min(j["offset"] for j in folded),
                     f"{f'+{len(folded)} renders':<{label_width}}|{_density(folded, wall, width)}| "
                     f"{_secs(statistics.median(durations)):>8}  median, "
                     f"{_secs(min(durations))} to {_secs(max(durations))}"))
    lines += [line for _, line in sorted(rows, key=lambda row: row[0])]

    path = report["critical_path"]
    lines += ["", f"critical path: {_path_text(path['jobs'])}"]
    lines.append("  " + " · ".join(f"{k} {_secs(v)} ({v / wall:.0%})" if wall else f"{k} {_secs(v)}"
                                   for k, v in path["seconds"].items() if v > 0))
    waits = sorted((s for s in path["steps"] if s["wait_before"] > 0), key=lambda s: -s["wait_before"])
    if waits:
        lines.append("  waits: " + ", ".join(f"{_secs(s['wait_before'])} before {s['job']}"
                                             for s in waits[:3]))
    chunk, frame = report["slowest_chunk"], report["slowest_frame"]
    if chunk:
        host = f" on {chunk['host']}" if chunk["host"] else ""
        if chunk["status"] == "ERROR":
            rate = ", FAILED"
        elif chunk["frames"]:
            per = chunk["duration"] / chunk["frames"]
            each = f"{per * 1000:.1f} ms" if per < 1 else _secs(per)
            rate = f", {chunk['frames']} frames, {each}/frame"
        else:
            rate = ""
        lines.append(f"slowest chunk: {chunk['job']} {_secs(chunk['duration'])}{host}{rate}")
    if frame:
        lines.append(f"slowest frame: {frame['frame']} in {frame['job']}: {_secs(frame['duration'])} "
                     f"(render {_secs(frame['render_seconds'])}, encode {_secs(frame['encode_seconds'])})")

    spent = report["breakdown"]
    total = sum(spent.values())
    lines += ["", f"where time went (all jobs, {_secs(total)}):"]
    for category in CATEGORIES:
        share = spent[category] / total if total else 0.0
        lines.append(f"  {category:<9}{_secs(spent[category]):>10}  {share:>4.0%}  "
                     f"{'█' * round(share * width)}")
    return "\n".join(lines) + "\n"
