"""Runners decide when and where jobs run: `open_runner(name)` picks one by name.

One registry: a runner is its module (the class that runs the jobs) plus its **front**
(runners/_front.py: its flags, its options from them, its module, its container hook), named
here by one line, or by another package through the `framefarm.runners` entry-point group
(`[project.entry-points."framefarm.runners"] NAME = "pkg.module:FrontClass"`). Importing this
package is light: the command line builds its parser from every front, and a runner's own
module (boto3, temporalio …) is imported only when it runs.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from framefarm.errors import UserError

if TYPE_CHECKING:
    from framefarm.job import AfterPlan
    from framefarm.model import RunRecord
    from framefarm.runners._base import Progress, ResumeRequest, Runner, RunRequest, RunResult
    from framefarm.runners._front import RunnerFront

__all__ = ["ENTRY_POINT_GROUP", "Progress", "ResumeRequest", "RunRequest", "RunResult", "Runner",
           "known_runners", "open_runner", "plan_hook", "reopen_runner", "runner_class",
           "runner_engine_view", "runner_front", "runner_fronts", "runner_job_statuses"]

ENTRY_POINT_GROUP = "framefarm.runners"

_BUILT_IN = {
    "local": "framefarm.runners._front:LocalFront",
    "batch": "framefarm.runners.batch_front:BatchFront",
    "temporal": "framefarm.runners.temporal_front:TemporalFront",
    "stepfunctions": "framefarm.runners.stepfunctions_front:StepFunctionsFront",
}
"""Each built-in runner's front, as "module:class"."""

_BASE_NAMES = frozenset({"Progress", "ResumeRequest", "Runner", "RunRequest", "RunResult"})


def __getattr__(name: str) -> Any:
    """The runner seam's types (runners/_base.py), imported when first used."""
    if name in _BASE_NAMES:
        from framefarm.runners import _base

        return getattr(_base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _load(path: str) -> Any:
    import importlib

    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


@functools.cache
def _plugins() -> dict[str, str]:
    """Runner name -> front of the runners other installed packages register (entry points);
    read only when a name is not a built-in's: scanning the installed packages costs ~30 ms."""
    from importlib.metadata import entry_points

    return {point.name: point.value for point in entry_points(group=ENTRY_POINT_GROUP)
            if point.name not in _BUILT_IN}


def known_runners() -> list[str]:
    """Names `--runner` accepts: the built-ins, then other packages' runners."""
    return [*_BUILT_IN, *_plugins()]


@functools.cache
def runner_front(name: str) -> RunnerFront:
    """The front of the runner called `name`; unknown names list the known ones."""
    path = _BUILT_IN.get(name) or _plugins().get(name)
    if path is None:
        raise UserError(f"unknown runner {name!r}: use one of {', '.join(known_runners())}")
    front: RunnerFront = _load(path)()
    return front


def runner_fronts(also: str | None = None) -> list[RunnerFront]:
    """The built-in runners' fronts, and that of the runner named `also` when another package
    registers it (its flags join the command line only when it is named)."""
    fronts = [runner_front(name) for name in _BUILT_IN]
    if also and also not in _BUILT_IN and also in _plugins():  # unknown: refused when it runs
        fronts.append(runner_front(also))
    return fronts


def runner_class(name: str) -> type[Runner]:
    """The class of the runner called `name`, imported now; unknown names list the known ones."""
    cls: type[Runner] = _load(runner_front(name).runner)
    return cls


def open_runner(name: str, **options: object) -> Runner:
    """The runner called `name`, built with `options`; unknown names list the known ones."""
    return runner_class(name)(**options)


def reopen_runner(run: RunRecord, **options: object) -> Runner:
    """The runner that started `run` (local for runs recorded before runners were named),
    rebuilt from the settings in its record; `options` win."""
    return runner_class(run.runner or "local").reopen(run.settings, **options)


def plan_hook(environ: Mapping[str, str]) -> AfterPlan | None:
    """What a plan job started by `framefarm job` in `environ` does once it has planned: the
    hook of the runner whose container this is (its front's `container_hook`, when its
    variable is set: on AWS Batch, FRAMEFARM_JOB_QUEUE, submit the render and encode jobs; under
    AWS Step Functions, FRAMEFARM_EXECUTION, record the slices and submit nothing, which wins
    over Batch's, whose job definitions it runs); elsewhere nothing."""
    matching = [front for front in runner_fronts() if front.container_hook is not None
                and environ.get(front.container_hook[1], "").strip()]
    replaced = {name for front in matching for name in front.replaces_hook_of}
    for front in matching:
        if front.name not in replaced and front.container_hook is not None:
            hook: AfterPlan | None = _load(front.container_hook[0])(environ)
            return hook
    return None


def runner_job_statuses(run: RunRecord) -> dict[str, dict[str, str]]:
    """What the runner that started `run` says of its jobs beside the job log (Runner.
    job_statuses): only asked when the run records ids of the runner's own."""
    if not run.runner_ids:
        return {}
    # A record from before runners were named has ids only if AWS Batch ran it: no other
    # runner recorded any.
    return runner_class(run.runner or "batch").job_statuses(
        run, chunks=int(run.plan.get("size") or 0))


def runner_engine_view(run: RunRecord) -> dict[str, str]:
    """What the workflow engine of the runner that started `run` says of it (Runner.
    engine_view: a Step Functions execution); {} for runners without one."""
    if not run.runner_ids or not run.runner:
        return {}
    return runner_class(run.runner).engine_view(run)
