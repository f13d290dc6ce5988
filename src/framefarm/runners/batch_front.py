"""AWS Batch, as the command line sees it (runners/_front.py): its `render` flags, and its
options and storage defaults from them. The runner itself is runners/batch.py, imported only
when it runs."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from framefarm import config
from framefarm.runners._front import Announce, RunnerFront


class BatchFront(RunnerFront):
    name = "batch"
    runner = "framefarm.runners.batch:BatchRunner"
    title = "AWS Batch"
    container_hook = ("framefarm.runners.batch:plan_hook", config.JOB_QUEUE)

    def add_arguments(self, group: argparse._ActionsContainer) -> None:
        group.add_argument("--stack", help="a deployed deploy/cloudformation.yaml stack: its "
                           "outputs name the queue, job definitions, bucket and table")
        group.add_argument("--job-queue", dest="job_queue",
                           help=f"the job queue (or {config.JOB_QUEUE})")
        for kind, variable in (("plan", config.PLAN_JOB_DEFINITION),
                               ("render", config.RENDER_JOB_DEFINITION),
                               ("encode", config.ENCODE_JOB_DEFINITION)):
            group.add_argument(f"--{kind}-job-definition", dest=f"{kind}_job_definition",
                               help=f"the {kind} job definition (or {variable})")
        group.add_argument("--plan-here", action="store_true", dest="plan_here",
                           help="plan on this machine and submit the render and encode jobs "
                                "from here")
        group.add_argument("--wait", action="store_true",
                           help="follow the run to the end and download the video to -o")

    def options(self, args: argparse.Namespace, common: Mapping[str, object], *,
                announce: Announce) -> tuple[dict[str, str], dict[str, object]]:
        """Flags beat the environment, which beats the stack's outputs; the stack's bucket and
        table are the storage and job-log defaults."""
        from framefarm.runners.batch import BatchTargets, stack_settings

        del common, announce  # Batch's job definitions size the jobs; it prints nothing itself
        settings = stack_settings(args.stack) if args.stack else {}
        flags = {config.JOB_QUEUE: args.job_queue,
                 config.PLAN_JOB_DEFINITION: args.plan_job_definition,
                 config.RENDER_JOB_DEFINITION: args.render_job_definition,
                 config.ENCODE_JOB_DEFINITION: args.encode_job_definition}
        chosen = {name: str(config.resolve(flag, name, settings.get(name, "")))
                  for name, flag in flags.items()}
        defaults = {name: settings[name] for name in (config.STORAGE, config.JOBLOG)
                    if name in settings}
        return defaults, {"targets": BatchTargets.from_environ(chosen),
                          "plan_here": args.plan_here, "wait": args.wait}
