"""Runners decide when and where jobs run: `open_runner(name)` picks one by name."""

from __future__ import annotations

from framefarm.errors import UserError
from framefarm.model import RunRecord
from framefarm.runners._base import Progress, ResumeRequest, Runner, RunRequest, RunResult

__all__ = ["Progress", "ResumeRequest", "RunRequest", "RunResult", "Runner", "known_runners",
           "open_runner", "reopen_runner"]

_RUNNERS = {
    "local": ("framefarm.runners.local", "LocalRunner", None),
    "batch": ("framefarm.runners.batch", "BatchRunner", "aws"),
    "temporal": ("framefarm.runners.temporal.runner", "TemporalRunner", "temporal"),
}


def known_runners() -> list[str]:
    """Names `--runner` accepts."""
    return list(_RUNNERS)


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
