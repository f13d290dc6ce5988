"""Runners decide when and where jobs run: `open_runner(name)` picks one by name."""

from __future__ import annotations

from framefarm.errors import UserError
from framefarm.runners._base import Progress, Runner, RunRequest, RunResult

__all__ = ["Progress", "RunRequest", "RunResult", "Runner", "known_runners", "open_runner"]

_RUNNERS = {
    "local": ("framefarm.runners.local", "LocalRunner", None),
    "batch": ("framefarm.runners.batch", "BatchRunner", "aws"),
    "temporal": ("framefarm.runners.temporal.runner", "TemporalRunner", "temporal"),
}


def known_runners() -> list[str]:
    """Names `--runner` accepts."""
    return list(_RUNNERS)


def open_runner(name: str, **options: object) -> Runner:
    """The runner called `name`, built with `options`; unknown names list the known ones."""
    import importlib

    try:
        module_name, class_name, _extra = _RUNNERS[name]
    except KeyError:
        raise UserError(f"unknown runner {name!r}: use one of {', '.join(_RUNNERS)}") from None
    cls = getattr(importlib.import_module(module_name), class_name)
    runner: Runner = cls(**options)
    return runner
