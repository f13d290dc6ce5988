"""`framefarm render`: flags -> job-contract variables -> a runner, with progress and a summary."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from opentelemetry.trace import StatusCode

from framefarm import _otel, config, tracing
from framefarm._api import prepare_run
from framefarm._cli_checks import check_output_path
from framefarm.errors import LeaseHeld, UserError
from framefarm.joblog import JobLog
from framefarm.progress import ProgressDisplay
from framefarm.report import load_report
from framefarm.runners import (
    Progress,
    RunRequest,
    RunResult,
    open_runner,
    runner_front,
    runner_fronts,
)
from framefarm.runners._base import ProgressCallback
from framefarm.storage import Storage


def max_memory_option(max_memory: int | None, *, runner: str) -> dict[str, object]:
    """The runner option for --max-memory (render, resume): only local runs take one; on
    AWS Batch and Temporal the job definitions and workers say each job's memory."""
    if not max_memory:
        return {}
    if runner != "local":
        raise UserError(f"--max-memory only works for local runs (on {runner} the job "
                        "definitions or workers say each job's memory): leave it out")
    return {"max_memory": max_memory}


def announce(line: str) -> None:
    """A runner's word to the user (a retried chunk, a run's link), on stderr."""
    print(f"framefarm: {line}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM (`framefarm cancel`, a service manager) stops the run as Ctrl-C does."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def render_command(args: argparse.Namespace) -> int:
    """Run `framefarm render`; returns the exit code."""
    began = time.perf_counter()
    check_output_path(args.output)  # before the runner's flags: the first thing a user names
    common: dict[str, object] = {"workers": args.workers, "announce": announce}
    common.update(max_memory_option(args.max_memory, runner=args.runner))
    chosen = runner_front(args.runner)
    for front in runner_fronts():
        if front is not chosen:
            front.refuse_stray(args, allowed=chosen.shared_flags)
    defaults, options = chosen.options(args, common, announce=announce)
    _otel.setup()  # before the first AWS client is made, so its calls are traced
    prepared = prepare_run(args.sketch, args.output, runner=args.runner, storage=args.storage,
                           joblog=args.joblog, defaults=defaults, frames=args.frames,
                           per_job=args.per_job, fps=args.fps, size=args.size, crf=args.crf,
                           preset=args.preset, run_id=args.run_id, keep_frames=args.keep_frames,
                           size_budget=args.size_budget, frame_timeout=args.frame_timeout,
                           kind=args.kind, assets=tuple(args.asset or ()))
    storage, joblog, env = prepared.storage, prepared.joblog, prepared.env
    if args.run_id:
        finished = _existing_run(joblog, args, sketch=env[config.SKETCH])
        if finished is not None:
            print(f"run {args.run_id}: already rendered with these settings -> {finished}")
            return 0
    runner = open_runner(args.runner, **options)
    return drive(lambda context, on_progress: runner.run(RunRequest(env={**env, **context}),
                                                         on_progress=on_progress),
                 runner=args.runner, storage=storage, joblog=joblog, began=began,
                 output=str(prepared.output))


Start = Callable[[Mapping[str, str], ProgressCallback], RunResult]
"""Starts a run: given the trace context variables every job gets, and the progress callback."""


def drive(start: Start, *, runner: str, storage: Storage, joblog: JobLog, began: float,
          output: str) -> int:
    """Run a run (render or resume) under its trace span with the progress display, then say
    how it ended; the exit code."""
    _otel.setup()
    # The root of the run's trace, or a child of the caller's (a traced CI job, say).
    with tracing.job_span("run", env=os.environ, attributes={"framefarm.runner": runner}) \
            as run_span, stop_on_sigterm():
        # Every job of the run joins this trace, through the job contract's TRACEPARENT.
        context = tracing.context_env()
        result = _run(lambda on_progress: start(context, on_progress))
        run_span.set_attribute("framefarm.run_id", result.run_id)
        if not result.succeeded:
            run_span.set_status(StatusCode.ERROR, "cancelled" if result.cancelled
                                else "a job failed")
    # The run's own trace: merged now when every job has ended, else by the encode job.
    finished = result.waited
    if result.attached:
        # Another `framefarm render` started this run (on Temporal): its trace is the run's.
        from framefarm.trace_store import merge_spans

        with tracing.untraced():
            merge_spans(storage, result.run_id)
    else:
        _otel.finish_job(storage, result.run_id, trace_id=tracing.span_trace_id(run_span),
                         name=f"run.{run_span.get_span_context().span_id:016x}", merge=finished)
    if result.cancelled:
        stopped = joblog.get_run(result.run_id)
        if stopped is not None and not stopped.plan:
            print(f"framefarm: run {result.run_id} CANCELLED before it was planned: render it "
                  "again (the same --run-id may be used)", file=sys.stderr)
        else:
            print(f"framefarm: run {result.run_id} CANCELLED; its finished chunks are kept: "
                  f"`framefarm resume {result.run_id}{_backend_flags(storage, joblog)}` "
                  "finishes it", file=sys.stderr)
        return 130
    if not result.succeeded:
        return _report_failure(result, joblog_url=joblog.url)
    if not result.waited:
        print(f"run {result.run_id}: submitted to {runner_front(runner).title}; follow it with "
              f"`framefarm status {result.run_id} --joblog {joblog.url}`; the video will be at "
              f"{result.output_url}")
        return 0
    run = joblog.get_run(result.run_id)
    frames = run.plan.get("total_frames", 0) if run else 0
    video = Path(output)
    shown = f"{video} ({_human_bytes(video.stat().st_size)})" if video.is_file() else output
    print(f"run {result.run_id}: {frames} frames in {time.perf_counter() - began:.1f} s -> {shown}")
    return 0


def _run(start: Callable[[ProgressCallback], RunResult]) -> RunResult:
    """Run the jobs with the progress display."""
    display: ProgressDisplay | None = None

    def on_progress(progress: Progress) -> None:
        nonlocal display
        if display is None:
            display = ProgressDisplay(progress.total_frames)
        display.update(progress.frames_done, elapsed=progress.elapsed)

    try:
        result = start(on_progress)
    finally:
        if display is not None:
            display.finish()
    return result


def _backend_flags(storage: Storage, joblog: JobLog) -> str:
    """The --storage/--joblog flags a later command needs, when they are not the defaults."""
    flags = ""
    if storage.url != config.default_storage_url():
        flags += f" --storage {storage.url}"
    if joblog.url != config.default_joblog_url():
        flags += f" --joblog {joblog.url}"
    return flags


def _existing_run(joblog: JobLog, args: argparse.Namespace, *, sketch: str) -> str | None:
    """For `render --run-id` of a run already in the job log: the video's path when that run
    finished with the same sketch and settings; else a UserError naming `resume`. None when
    there is no such run (or the runner finds it: a Temporal or Step Functions run, which
    `render` attaches to)."""
    run = joblog.get_run(args.run_id)
    if run is None or (run.runner == args.runner and runner_front(args.runner).attaches):
        return None
    holder = joblog.lease(args.run_id)
    if holder is not None:
        raise LeaseHeld(f"run {args.run_id} is being rendered by {holder.describe()}: wait for "
                        f"it, stop it with `framefarm cancel {args.run_id}`, or choose another "
                        "--run-id")
    if not run.plan:
        return None  # it stopped before it was planned: nothing of it to keep, render it anew
    report = load_report(joblog, args.run_id) or {}
    status = report.get("status", "PENDING")
    if status == "SUCCEEDED" and _same_settings(run.plan, args, sketch=sketch) and run.output \
            and ("://" in run.output or Path(run.output).is_file()):
        return run.output
    fix = ("it finished with other settings or its video is gone: choose another --run-id"
           if status == "SUCCEEDED" else
           f"`framefarm resume {args.run_id}` finishes it, `framefarm cancel {args.run_id}` stops "
           "it, or choose another --run-id")
    raise UserError(f"run {args.run_id} already exists ({status}): {fix}")


def _same_settings(plan: Mapping[str, Any], args: argparse.Namespace, *, sketch: str) -> bool:
    """True when the planned run is what these flags ask for: the same sketch (by content) and
    every setting given on the command line."""
    stored = str(plan.get("sketch", ""))
    if "://" in stored and Path(sketch).is_file():
        if hashlib.sha256(Path(sketch).read_bytes()).hexdigest() not in stored:
            return False
    elif stored != sketch:
        return False
    video = plan.get("video") or {}
    wanted: dict[str, object] = {"total_frames": args.frames, "frames_per_job": args.per_job,
                                 "crf": args.crf, "preset": args.preset}
    have = {**plan, **video}
    if any(v is not None and have.get(k) != v for k, v in wanted.items()):
        return False
    if args.size and (video.get("width"), video.get("height")) != tuple(args.size):
        return False
    if args.fps:
        from framefarm.model import parse_fps

        try:
            if parse_fps(args.fps) != parse_fps(str(video.get("fps"))):
                return False
        except (ValueError, ZeroDivisionError):
            return False
    return bool(plan.get("keep_frames", False)) == bool(args.keep_frames)


def _report_failure(result: RunResult, *, joblog_url: str) -> int:
    first = result.failures[0] if result.failures else None
    if first is None:
        print(f"framefarm: run {result.run_id} FAILED", file=sys.stderr)
        return 1
    renders = [f for f in result.failures if f.job.startswith("render")]
    if not renders and first.exit_code == UserError.exit_code and "\n" not in first.error:
        print(f"framefarm: {first.error}", file=sys.stderr)  # bad input: one line
        return first.exit_code
    if renders:
        head = (f"run {result.run_id} FAILED: {len(renders)} render job(s) failed; the chunks "
                "that finished keep their segments in storage, and `framefarm resume "
                f"{result.run_id}` renders the rest")
    else:
        head = f"run {result.run_id} FAILED in {first.job}"
    print(f"framefarm: {head}\n{first.error}", file=sys.stderr)
    print(f"framefarm: see `framefarm status {result.run_id} --joblog {joblog_url}`",
          file=sys.stderr)
    return first.exit_code or 1


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"
