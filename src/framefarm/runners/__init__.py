"""Runners decide when and where jobs run: `open_runner(name)` picks one by name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from framefarm import config
from framefarm.errors import UserError
from framefarm.model import RunRecord
from framefarm.runners._base import Progress, ResumeRequest, Runner, RunRequest, RunResult

if TYPE_CHECKING:
    from framefarm.job import AfterPlan

__all__ = ["Progress", "ResumeRequest", "RunRequest", "RunResult", "Runner", "known_runners",
           "open_runner", "plan_hook", "reopen_runner", "runner_class", "runner_job_statuses"]

_RUNNERS = {
    "local": ("framefarm.runners.local", "LocalRunner", None),
    "batch": ("framefarm.runners.batch", "BatchRunner", "aws"),
    "temporal": ("framefarm.runners.temporal.runner", "TemporalRunner", "temporal"),
}


def known_runners() -> list[str]:
    """Names `--runner` accepts."""
    return list(_RUNNERS)


def runner_class(name: str) -> type[Runner]:
    """The class of the runner called `name`, imported now; unknown names list the known ones."""
    return _runner_class(name)


def _runner_class(name: str) -> type[Runner]:
    import importlib

    try:
        module_name, class_name, _extra = _RUNNERS[name]
    except KeyError:
        raise UserError(f"unknown runner {name!r}: use one of {', '.join(_RUNNERS)}") from None
    cls: type[Runner] = getattr(importlib.import_module(module_name), class_name)
    return cls


def open_runner(name: str, **options: object) -> Runner:
    """The runner called `name`, built with `options`; unknown names list the known ones."""
    return _runner_class(name)(**options)


def reopen_runner(run: RunRecord, **options: object) -> Runner:
    """The runner that started `run` (local for runs recorded before runners were named),
    rebuilt from the settings in its record; `options` win."""
    return _runner_class(run.runner or "local").reopen(run.settings, **options)


_CONTAINER_HOOKS = {
    "batch": ("framefarm.runners.batch", "plan_hook", config.JOB_QUEUE),
}
"""Runners whose plan job, run in their own container, starts the jobs after it: the module and
function that builds the hook, and the contract variable that says the container is theirs."""


def plan_hook(environ: Mapping[str, str]) -> AfterPlan | None:
    """What a plan job started by `framefarm job` in `environ` does once it has planned: on AWS
    Batch (FRAMEFARM_JOB_QUEUE set) submit the render and encode jobs; elsewhere nothing."""
    import importlib

    for module_name, function, variable in _CONTAINER_HOOKS.values():
        if environ.get(variable, "").strip():
            hook: AfterPlan | None = getattr(importlib.import_module(module_name), function)(environ)
            return hook
    return None


def runner_job_statuses(run: RunRecord) -> dict[str, dict[str, str]]:
    """What the runner that started `run` says of its jobs beside the job log (Runner.
    job_statuses): only asked when the run records ids of the runner's own."""
    if not run.runner_ids:
        return {}
    # A record from before runners were named has ids only if AWS Batch ran it: no other
    # runner recorded any.
    return _runner_class(run.runner or "batch").job_statuses(
        run, chunks=int(run.plan.get("size") or 0))
