"""`framefarm resume RUN` and `framefarm cancel RUN`: finish or stop a run, whichever runner
started it (the run's record in the job log names it and its settings)."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from framefarm import config
from framefarm.errors import LeaseHeld, UserError
from framefarm.joblog import JobLog
from framefarm.lifecycle import chunks_to_render
from framefarm.model import RunRecord
from framefarm.report import load_report
from framefarm.runners import ResumeRequest, reopen_runner, runner_fronts
from framefarm.steps.plan import read_plan_and_hash
from framefarm.storage import open_storage


def main(args: argparse.Namespace) -> int:
    """Run `framefarm resume` or `framefarm cancel`; the exit code."""
    from framefarm._cli_checks import existing_joblog

    url = str(config.resolve(args.joblog, config.JOBLOG, config.default_joblog_url()))
    joblog = existing_joblog(url)  # looking for a run creates no job log
    run = joblog.get_run(args.run_id) if joblog is not None else None
    if joblog is None or run is None:
        raise UserError(f"run {args.run_id!r} is not in the job log {url}: see "
                        "`framefarm runs` (or give --joblog)")
    if args.command == "cancel":
        return cancel(run, joblog, options=_runner_options(run, args))
    return resume(run, joblog, args)


def _runner_options(run: RunRecord, args: argparse.Namespace) -> dict[str, object]:
    """The connection flags given to resume or cancel (they beat the run's record), for the
    run's runner; another runner's flags are refused (RunnerFront.lifecycle_options)."""
    options: dict[str, object] = {}
    for front in runner_fronts():
        options.update(front.lifecycle_options(run, args))
    return options


def cancel(run: RunRecord, joblog: JobLog, *, options: dict[str, object] | None = None) -> int:
    """Mark the run cancelled and have its runner stop its driver and jobs."""
    status = (load_report(joblog, run.run_id) or {}).get("status", "")
    if status == "SUCCEEDED":
        print(f"run {run.run_id} already SUCCEEDED: nothing to cancel ({run.output})")
        return 0
    marked = joblog.mark_cancelled(run.run_id) or run
    said = reopen_runner(marked, **(options or {})).cancel(marked, joblog=joblog)
    flags = "" if joblog.url == config.default_joblog_url() else f" --joblog {joblog.url}"
    print(f"run {run.run_id}: CANCELLED ({said}); `framefarm resume {run.run_id}{flags}` "
          "finishes it")
    return 0


def resume(run: RunRecord, joblog: JobLog, args: argparse.Namespace) -> int:
    """Render the run's chunks that have no verified segment, then encode it."""
    from framefarm._api import frame_timeout_env
    from framefarm._render_cmd import announce, drive, max_memory_option

    began = time.perf_counter()
    if not args.wait and run.runner != "batch":
        raise UserError(f"--no-wait is for runs on AWS Batch, and run {run.run_id} is a "
                        f"{run.runner or 'local'} run: leave --no-wait out")
    # The storage the run's plan was stored in, unless told otherwise.
    storage = open_storage(str(config.resolve(args.storage, config.STORAGE,
                                              run.settings.get(config.STORAGE)
                                              or config.default_storage_url())))
    plan, digest = read_plan_and_hash(run.run_id, storage) if run.plan else (None, "")
    if plan is None:
        raise UserError(f"run {run.run_id} failed before it was planned, so there is nothing to "
                        "resume: render it again (the same --run-id may be used)")
    todo = tuple(chunks_to_render(plan, digest, storage=storage, joblog=joblog))
    output = run.output or plan.output
    report = load_report(joblog, run.run_id) or {}
    delivered = "://" in output or Path(output).is_file()
    if not todo and report.get("status") == "SUCCEEDED" and delivered:
        print(f"run {run.run_id} already SUCCEEDED -> {output}")
        return 0  # (its video gone, it is encoded again from the segments)
    holder = joblog.lease(run.run_id)
    if holder is not None:  # refused before the cancellation is undone
        raise LeaseHeld(f"run {run.run_id} is being rendered by {holder.describe()}: wait for "
                        f"it, or stop it with `framefarm cancel {run.run_id}`")
    if run.cancelled_at:  # resuming a cancelled run starts it again
        run = joblog.update_run(run.run_id, lambda found: replace(found or run, cancelled_at="")) \
            or replace(run, cancelled_at="")
    env = {config.RUN_ID: run.run_id, config.STORAGE: storage.url, config.JOBLOG: joblog.url,
           config.OUTPUT: plan.output or output}
    env.update(frame_timeout_env(args.frame_timeout, run.settings.get(config.FRAME_TIMEOUT, "")))
    options: dict[str, object] = {"workers": args.workers} if args.workers else {}
    options.update(max_memory_option(args.max_memory, runner=run.runner or "local"))
    if (run.runner or "local") in ("local", "temporal"):
        options["announce"] = announce
    if run.runner == "batch":
        options["wait"] = args.wait
    options.update(_runner_options(run, args))
    runner = reopen_runner(run, **options)
    print(f"framefarm: resuming run {run.run_id}: {len(todo)} of {plan.size} chunks to render",
          file=sys.stderr, flush=True)
    return drive(lambda context, on_progress: runner.resume(
        ResumeRequest(run=run, env={**env, **context}, chunks=todo), on_progress=on_progress),
        runner=run.runner or "local", storage=storage, joblog=joblog, began=began,
        output=plan.output or output)
