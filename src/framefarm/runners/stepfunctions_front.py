"""AWS Step Functions, as the command line sees it (runners/_front.py): Batch's --stack and
--wait, and --state-machine; its options and storage defaults from the stack's outputs. The
runner itself is runners/stepfunctions.py, imported only when it runs."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from framefarm import config
from framefarm.runners._front import Announce, RunnerFront


class StepFunctionsFront(RunnerFront):
    name = "stepfunctions"
    runner = "framefarm.runners.stepfunctions:StepFunctionsRunner"
    title = "AWS Step Functions"
    container_hook = ("framefarm.runners.stepfunctions:plan_hook", config.EXECUTION)
    replaces_hook_of = ("batch",)
    shared_flags = ("stack", "wait")
    attaches = True

    def add_arguments(self, group: argparse._ActionsContainer) -> None:
        group.add_argument("--state-machine", dest="state_machine", metavar="ARN",
                           help=f"the state machine to start (or {config.STATE_MACHINE}; "
                                "default: the --stack's StateMachine output); --stack and "
                                "--wait work as for --runner batch")

    def options(self, args: argparse.Namespace, common: Mapping[str, object], *,
                announce: Announce) -> tuple[dict[str, str], dict[str, object]]:
        """The flag beats the environment, which beats the stack's outputs; the stack's bucket
        and table are the storage and job-log defaults (and its table the only job log its
        state machine reads)."""
        from framefarm.runners.batch import stack_settings

        del common
        settings = stack_settings(args.stack) if args.stack else {}
        machine = str(config.resolve(args.state_machine, config.STATE_MACHINE,
                                     settings.get(config.STATE_MACHINE, "")))
        defaults = {name: settings[name] for name in (config.STORAGE, config.JOBLOG)
                    if name in settings}
        table = settings.get(config.JOBLOG, "").removeprefix("dynamodb://")
        return defaults, {"state_machine": machine, "table": table, "wait": args.wait,
                          "announce": announce}
