"""What the web view shows, as JSON-safe dicts: the run as `framefarm status --json` reports it
(report.load_report), the runs as `framefarm runs` lists them, the trace as `framefarm trace`
reads it (trace_report.build_report) — summarised so that a run of a million chunks costs a page
of bounded size. No web code here: the app serves these dicts."""

from __future__ import annotations

import math
import os
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from framefarm.joblog import JobLog
from framefarm.lifecycle import with_lost
from framefarm.model import TERMINAL_STATUSES, JobRecord, RunRecord
from framefarm.report import frames_done, load_report, overall_status
from framefarm.steps._keys import output_key, segment_key
from framefarm.storage import Storage
from framefarm.trace_report import build_report, fold_renders

STATE_LETTERS = {"SUBMITTED": "q", "PENDING": "q", "RUNNABLE": "q", "STARTING": "r",
                 "RUNNING": "r", "SUCCEEDED": "s", "FAILED": "f", "CANCELLED": "c"}
"""A chunk's state in the grid, one letter (its last attempt's status): queued, running,
succeeded, failed, cancelled; "." for a chunk with no attempt yet."""
WAITING = "."
GRID_CELLS = 10_000
"""The most cells the chunk grid draws; above, each cell stands for a range of chunks."""
_LEAST_DONE = "frcq.s"
"""A cell that stands for several chunks shows the least done of them, a failure first."""
FAILED_SHOWN = 20
"""Failed attempts shown on a run's page with their errors (the last ones; all are counted)."""
FOLD_ABOVE = 40
"""Above this many render attempts the waterfall folds them as `framefarm trace` does."""
DENSITY_BINS = 100
SLOWEST_FRAMES = 20
RETRIED_SHOWN = 2_000
"""Chunks with more than one attempt whose count the grid's tooltips get (the rest say 'more')."""
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _when(stamp: str) -> datetime | None:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None
    except ValueError:
        return None


def _span_seconds(first: str, last: str) -> float | None:
    start, stop = _when(first), _when(last)
    return None if start is None or stop is None else max(0.0, (stop - start).total_seconds())


def sketch_name(plan: Mapping[str, Any]) -> str:
    """The sketch as its user named it (its path), else its stored URL's file name."""
    name = str(plan.get("sketch_name") or plan.get("sketch") or "")
    return name.rstrip("/").rsplit("/", 1)[-1]


def output_bytes(storage: Storage, run_id: str) -> int | None:
    """The stored video's size when storage has it as a local file (None: not known here)."""
    path = storage.local_path(output_key(run_id))
    return path.stat().st_size if path is not None else None


def _latest(jobs: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Job name -> its last attempt (jobs come in order, attempts ascending)."""
    latest: dict[str, Mapping[str, Any]] = {}
    for job in jobs:
        latest[job["job"]] = job
    return latest


def chunk_counts(renders: Iterable[Mapping[str, Any]], chunks: int | None) -> dict[str, int]:
    """How many chunks are in each state, by their last attempt; WAITING: none yet."""
    counts = dict.fromkeys(("SUCCEEDED", "RUNNING", "QUEUED", "FAILED", "CANCELLED", "WAITING"), 0)
    seen = 0
    for job in renders:
        letter = STATE_LETTERS.get(job["status"], "q")
        counts[{"s": "SUCCEEDED", "r": "RUNNING", "q": "QUEUED", "f": "FAILED",
                "c": "CANCELLED"}[letter]] += 1
        seen += 1
    counts["WAITING"] = max(0, (chunks or 0) - seen)
    return counts


def _wall(jobs: Sequence[Mapping[str, Any]], status: str, created_at: str) -> tuple[str, float | None]:
    """When the run started (its first job, else its record) and its wall time so far."""
    starts = [j["started_at"] or j["submitted_at"] for j in jobs if j["started_at"] or j["submitted_at"]]
    started = min(starts, default=created_at)
    if status in TERMINAL_STATUSES:
        stops = [j["stopped_at"] for j in jobs if j["stopped_at"]]
        last = max(stops, default="")
    else:
        last = datetime.now(UTC).isoformat()
    return started, _span_seconds(started, last) if started and last else None


def run_row(joblog: JobLog, storage: Storage, run: RunRecord) -> dict[str, Any]:
    """One run as the runs page lists it (`framefarm runs --json`'s fields and more)."""
    latest = with_lost(joblog.latest_jobs(run.run_id))
    status = overall_status(run, latest, driven=joblog.lease(run.run_id) is not None)
    jobs = [_brief(r) for r in latest]
    renders = [j for j in jobs if j["kind"] == "render"]
    chunks = run.plan.get("size")
    started, wall = _wall(jobs, status, run.created_at)
    return {"run_id": run.run_id, "status": status, "runner": run.runner or "local",
            "created_at": run.created_at, "started_at": started, "wall_seconds": wall,
            "sketch": run.plan.get("sketch", ""), "sketch_name": sketch_name(run.plan),
            "total_frames": run.plan.get("total_frames"),
            "frames_done": frames_done(latest), "chunks": chunks,
            "chunk_states": chunk_counts(renders, chunks), "output": run.output,
            "output_bytes": output_bytes(storage, run.run_id) if status == "SUCCEEDED" else None}


def _brief(record: JobRecord) -> dict[str, Any]:
    return {"job": record.job, "kind": record.kind, "index": record.index, "status": record.status,
            "frames": record.frames, "started_at": record.started_at,
            "submitted_at": record.submitted_at, "stopped_at": record.stopped_at}


def runs_page(joblog: JobLog | None, storage: Storage, *, status: str = "", offset: int = 0,
              limit: int = 25) -> dict[str, Any]:
    """A page of runs, newest first; with `status`, only the runs in that status."""
    if joblog is None:  # no job log file yet: no runs
        return {"runs": [], "total": 0, "offset": offset, "limit": limit, "status": status}
    runs = joblog.runs()
    if status:
        rows = [row for row in (run_row(joblog, storage, r) for r in runs) if row["status"] == status]
        total, page = len(rows), rows[offset:offset + limit]
    else:
        total = len(runs)
        page = [run_row(joblog, storage, r) for r in runs[offset:offset + limit]]
    return {"runs": page, "total": total, "offset": offset, "limit": limit, "status": status}


def chunk_grid(latest: Mapping[str, Mapping[str, Any]], attempts: Mapping[int, int],
               chunks: int) -> dict[str, Any]:
    """The chunk grid: one letter per cell (STATE_LETTERS); above GRID_CELLS chunks each cell
    stands for `per_cell` chunks and shows the least done of them."""
    letters = [WAITING] * chunks
    for job in latest.values():
        index = job.get("index")
        if job["kind"] == "render" and isinstance(index, int) and 0 <= index < chunks:
            letters[index] = STATE_LETTERS.get(job["status"], "q")
    per_cell = max(1, math.ceil(chunks / GRID_CELLS))
    if per_cell == 1:
        cells = "".join(letters)
    else:
        rank = {letter: i for i, letter in enumerate(_LEAST_DONE)}
        cells = "".join(min(letters[i:i + per_cell], key=rank.__getitem__)
                        for i in range(0, chunks, per_cell))
    retried = {str(i): n for i, n in sorted(attempts.items()) if n > 1}
    shown = dict(list(retried.items())[:RETRIED_SHOWN])
    return {"chunks": chunks, "per_cell": per_cell, "cells": cells, "retried": shown,
            "retried_total": len(retried)}


def _progress(renders: Sequence[Mapping[str, Any]], *, status: str, total: int | None,
              done: int) -> dict[str, Any]:
    """Frames per second and the time left, from the render attempts' own times."""
    starts = [j["started_at"] for j in renders if j["started_at"]]
    if not starts or not total:
        return {"fps": None, "eta_seconds": None, "elapsed_seconds": None}
    if status in TERMINAL_STATUSES:
        last = max((j["stopped_at"] for j in renders if j["stopped_at"]), default="")
    else:
        last = datetime.now(UTC).isoformat()
    elapsed = _span_seconds(min(starts), last) or 0.0
    fps = done / elapsed if elapsed > 0 and done else None
    eta = (total - done) / fps if fps and status not in TERMINAL_STATUSES else None
    return {"fps": fps, "eta_seconds": eta, "elapsed_seconds": elapsed}


def _links(run: RunRecord | None, report: Mapping[str, Any]) -> list[dict[str, str]]:
    """The runner's own ids for the run, each with a page where one is known."""
    if run is None:
        return []
    links: list[dict[str, str]] = []
    engine = report.get("engine") or {}
    if engine.get("execution"):
        links.append({"label": "Step Functions execution", "text": engine["execution"],
                      "url": engine.get("url", "")})
    arn = str(run.runner_ids.get("execution", ""))
    # The console's region: the execution's own, else this machine's AWS configuration.
    region = arn.split(":")[3] if arn.count(":") >= 4 else \
        os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION", "")
    for name, value in run.runner_ids.items():
        if name in ("execution", "slices", "terminated", "chunks") or not value:
            continue
        url = (f"https://{region}.console.aws.amazon.com/batch/home?region={region}"
               f"#jobs/detail/{value}") if region else ""
        links.append({"label": f"AWS Batch {name} job", "text": str(value), "url": url})
    if run.runner == "temporal":
        ui, namespace = run.settings.get("ui", ""), run.settings.get("namespace") or "default"
        url = (f"{ui.rstrip('/')}/namespaces/{namespace}/workflows/{run.run_id}" if ui else "")
        # A render command's own dev server (no address recorded) lives on a port of its own,
        # only as long as that command: the command printed its page.
        server = run.settings.get("address") or (
            f"the render command's own dev server ({run.settings['data_dir']})"
            if run.settings.get("data_dir") else "the default server")
        links.append({"label": "Temporal workflow",
                      "text": f"{run.run_id} in namespace {namespace} at {server}", "url": url})
    return links


def _plan(run: RunRecord | None) -> dict[str, Any]:
    plan = dict(run.plan) if run else {}
    if not plan:
        return {}
    video = plan.get("video") or {}
    found = _SHA256.search(str(plan.get("sketch", "")))
    return {"total_frames": plan.get("total_frames"), "frames_per_job": plan.get("frames_per_job"),
            "chunks": plan.get("size"), "width": video.get("width"), "height": video.get("height"),
            "fps": video.get("fps"), "crf": video.get("crf"), "preset": video.get("preset"),
            "sketch": plan.get("sketch", ""), "sketch_name": sketch_name(plan),
            "sketch_path": plan.get("sketch_name", ""),
            "sketch_sha256": found.group(0) if found else "",
            "sketch_mode": plan.get("sketch_mode", ""), "keep_frames": plan.get("keep_frames", False),
            "output": plan.get("output", "")}


def run_report(joblog: JobLog, storage: Storage, run_id: str) -> dict[str, Any] | None:
    """The run as `framefarm status --json` prints it, plus what its page shows: the plan, the
    runner's links, the chunk grid, progress, failed attempts, the latest finished chunk (its
    preview) and whether the video is stored. None when the job log has not heard of it."""
    report = load_report(joblog, run_id)
    if report is None:
        return None
    run = joblog.get_run(run_id)
    jobs: list[Mapping[str, Any]] = report["jobs"]
    latest = _latest(jobs)
    renders = [j for j in latest.values() if j["kind"] == "render"]
    attempts: dict[int, int] = {}
    for job in jobs:
        if job["kind"] == "render" and isinstance(job.get("index"), int):
            attempts[job["index"]] = max(attempts.get(job["index"], 0), int(job["attempt"]))
    chunks = int(report.get("chunks") or 0)
    failed = [j for j in jobs if j["status"] == "FAILED"]
    finished = [j for j in renders if j["status"] == "SUCCEEDED"]
    newest = max(finished, key=lambda j: (j["stopped_at"], j.get("index") or 0), default=None)
    status = report["status"]
    holder = joblog.lease(run_id)
    extra = {
        "plan": _plan(run),
        "links": _links(run, report),
        "settings": dict(run.settings) if run else {},
        "runner_ids": dict(run.runner_ids) if run else {},
        "grid": chunk_grid(latest, attempts, chunks),
        "chunk_states": chunk_counts(renders, chunks),
        "progress": _progress(renders, status=status, total=report.get("total_frames"),
                              done=int(report.get("frames_done") or 0)),
        "failed": [_failure(j) for j in failed[-FAILED_SHOWN:]],
        "failed_total": len(failed),
        "preview_chunk": None if newest is None else {"index": newest["index"],
                                                      "sha256": newest.get("sha256", "")},
        "video_stored": storage.exists(output_key(run_id)),
        "output_bytes": output_bytes(storage, run_id),
        "driver": holder.describe() if holder is not None else "",
        "jobs_total": len(jobs),
    }
    extra["started_at"], extra["wall_seconds"] = _wall(jobs, status, report.get("created_at", ""))
    return {**report, **extra}


def _failure(job: Mapping[str, Any]) -> dict[str, Any]:
    return {"job": job["job"], "index": job.get("index"), "attempt": job["attempt"],
            "host": job.get("host", ""), "stopped_at": job.get("stopped_at", ""),
            "exit_code": job.get("exit_code", 0), "error": job.get("error", "")}


def jobs_page(jobs: Sequence[Mapping[str, Any]], *, offset: int = 0, limit: int = 100,
              status: str = "", kind: str = "") -> dict[str, Any]:
    """A page of a run's job attempts (status --json's `jobs`), optionally of one status or kind."""
    chosen = [j for j in jobs if (not status or j["status"] == status) and (not kind or j["kind"] == kind)]
    return {"jobs": list(chosen[offset:offset + limit]), "total": len(chosen), "offset": offset,
            "limit": limit}


# -- a chunk ------------------------------------------------------------------------------------

def chunk_report(joblog: JobLog, storage: Storage, run_id: str, index: int,
                 spans: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """One chunk: its frames, every attempt, its segment (size, recorded and stored checksum),
    and its slowest frames from the trace. None when the run has no such chunk."""
    run = joblog.get_run(run_id)
    plan = run.plan if run else {}
    chunks, per_job = int(plan.get("size") or 0), int(plan.get("frames_per_job") or 0)
    if not 0 <= index < chunks or per_job <= 0:
        return None
    start = index * per_job
    stop = min(start + per_job, int(plan.get("total_frames") or 0))
    name = f"render:{index}"
    attempts = [r.to_dict() for r in with_lost(joblog.jobs(run_id)) if r.job == name]
    key = segment_key(run_id, index)
    recorded = next((a for a in reversed(attempts) if a["status"] == "SUCCEEDED" and a["sha256"]), None)
    local = storage.local_path(key)
    stored = storage.exists(key) if local is None else True
    sha = ""
    if local is not None:
        import hashlib

        with local.open("rb") as f:
            sha = hashlib.file_digest(f, "sha256").hexdigest()
    return {"run_id": run_id, "index": index, "job": name, "frame_start": start, "frame_stop": stop,
            "frames": stop - start, "attempts": attempts,
            "segment": {"key": key, "stored": stored,
                        "bytes": local.stat().st_size if local is not None
                        else (recorded["bytes"] if recorded else None),
                        "recorded_sha256": recorded["sha256"] if recorded else "",
                        "stored_sha256": sha,
                        "matches": (sha == recorded["sha256"]) if sha and recorded else None},
            "slowest_frames": slowest_frames(spans, index)}


def slowest_frames(spans: Sequence[Mapping[str, Any]], index: int,
                   keep: int = SLOWEST_FRAMES) -> list[dict[str, Any]]:
    """The frame spans under chunk `index`'s render attempts, slowest first."""
    owners: dict[str, int] = {}
    for span in spans:
        attributes = span.get("attributes") or {}
        if span.get("name") == "render" and attributes.get("framefarm.chunk") == index:
            owners[span["span_id"]] = int(attributes.get("framefarm.attempt", 1))
    if not owners:
        return []
    parent = {s["span_id"]: s.get("parent_id") for s in spans}
    found: list[dict[str, Any]] = []
    for span in spans:
        if span.get("name") != "frame":
            continue
        above, steps = span.get("parent_id"), 0
        while isinstance(above, str) and above not in owners and steps < 50:
            above, steps = parent.get(above), steps + 1
        if isinstance(above, str) and above in owners:
            attributes = span.get("attributes") or {}
            seconds: float = round(float(span["end"]) - float(span["start"]), 6)
            found.append({"frame": attributes.get("framefarm.frame"), "attempt": owners[above],
                          "seconds": seconds,
                          "render_seconds": attributes.get("framefarm.render_seconds"),
                          "encode_seconds": attributes.get("framefarm.encode_seconds")})
    found.sort(key=lambda f: -float(f["seconds"]))
    return found[:keep]


# -- the trace ----------------------------------------------------------------------------------

def trace_view(spans: Sequence[Mapping[str, Any]], run_id: str) -> dict[str, Any]:
    """`framefarm trace`'s report for a waterfall: above FOLD_ABOVE render attempts, the ones
    `framefarm trace` draws (failed, retried, slowest) one by one, the rest as one density bar."""
    report = build_report(spans, run_id=run_id)
    renders = [j for j in report["jobs"] if j["kind"] == "render"]
    jobs, rest = fold_renders(report["jobs"], FOLD_ABOVE)
    folded = _density(rest, report["wall_seconds"]) if rest else None
    return {**{k: v for k, v in report.items() if k not in ("jobs", "retried_chunks")},
            "retried_chunks": report["retried_chunks"][:100],
            "retried_total": len(report["retried_chunks"]), "jobs": jobs, "folded": folded,
            "render_attempts": len(renders)}


def _density(jobs: Sequence[Mapping[str, Any]], wall: float) -> dict[str, Any]:
    """How many of `jobs` run in each of DENSITY_BINS slices of the run's wall time."""
    bins = [0] * DENSITY_BINS
    for job in jobs:
        if wall <= 0:
            break
        first = min(DENSITY_BINS - 1, int(job["offset"] / wall * DENSITY_BINS))
        last = min(DENSITY_BINS, max(first + 1, math.ceil((job["offset"] + job["duration"])
                                                             / wall * DENSITY_BINS)))
        for b in range(first, last):
            bins[b] += 1
    durations = [j["duration"] for j in jobs]
    return {"count": len(jobs), "bins": bins,
            "median": statistics.median(durations) if durations else 0.0,
            "min": min(durations, default=0.0), "max": max(durations, default=0.0)}
