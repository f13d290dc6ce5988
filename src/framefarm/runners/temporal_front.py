"""Temporal, as the command line sees it (runners/_front.py): the server, namespace and task
queue flags `render`, `resume`, `cancel` and `worker` share, and `render`'s own. The runner
itself is runners/temporal/ (temporalio), imported only when it runs."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from framefarm import config
from framefarm.runners._front import Announce, RunnerFront

DEFAULT_HEARTBEAT_HELP = 30
"""The heartbeat timeout `--help` shows (runners/temporal/shared.py DEFAULT_HEARTBEAT_SECONDS)."""


def positive_float(text: str) -> float:
    """argparse type: a number above 0, and finite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
    if value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number")
    return value


class TemporalFront(RunnerFront):
    name = "temporal"
    runner = "framefarm.runners.temporal.runner:TemporalRunner"
    attaches = True
    title = "Temporal"

    def add_connection_arguments(self, group: argparse._ActionsContainer) -> None:
        group.add_argument("--temporal-address", dest="temporal_address", metavar="HOST:PORT",
                           help=f"HOST:PORT of the Temporal server (or {config.TEMPORAL_ADDRESS}; "
                                "render without one starts a dev server and a worker of its own)")
        group.add_argument("--temporal-namespace", dest="temporal_namespace", metavar="NAMESPACE",
                           help=f"the namespace (or {config.TEMPORAL_NAMESPACE}; default: default)")
        group.add_argument("--task-queue", dest="task_queue", metavar="QUEUE",
                           help=f"the task queue (or {config.TASK_QUEUE}; "
                                f"default: {config.DEFAULT_TASK_QUEUE})")

    def add_arguments(self, group: argparse._ActionsContainer) -> None:
        self.add_connection_arguments(group)
        group.add_argument("--temporal-ui", dest="temporal_ui", metavar="URL",
                           help=f"the server's web UI, for the run's link (or {config.TEMPORAL_UI}; "
                                "default: the address's port + 1000)")
        group.add_argument("--heartbeat-timeout", dest="heartbeat_timeout", type=positive_float,
                           metavar="SECONDS",
                           help="seconds a render job may take for one frame (the first with the "
                                "sketch's setup) before its chunk goes to another worker "
                                f"(default {DEFAULT_HEARTBEAT_HELP})")

    def options(self, args: argparse.Namespace, common: Mapping[str, object], *,
                announce: Announce) -> tuple[dict[str, str], dict[str, object]]:
        """The server and namespace also come from the Temporal SDK's own variables
        (TEMPORAL_ADDRESS …), read by the runner."""
        return {}, {**common, "address": args.temporal_address,
                    "namespace": args.temporal_namespace, "task_queue": args.task_queue,
                    "ui": args.temporal_ui, "heartbeat_seconds": args.heartbeat_timeout,
                    "announce": announce}

    def connection_options(self, given: Mapping[str, Any]) -> dict[str, object]:
        names = {"temporal_address": "address", "temporal_namespace": "namespace",
                 "task_queue": "task_queue"}
        return {names[name]: value for name, value in given.items()}
