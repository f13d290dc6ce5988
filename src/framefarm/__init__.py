"""framefarm: render a Python animation sketch in parallel and encode it to one video.

The public API is loaded lazily, so `framefarm job` and worker processes import only what they use.

>>> import framefarm
>>> framefarm.render("examples/plasma.py", "plasma.mp4", frames=60)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Chunk",
    "FrameContext",
    "Plan",
    "PlanRequest",
    "SketchError",
    "UserError",
    "VideoSettings",
    "__version__",
    "load_sketch",
    "make_plan",
    "render",
]

_LAZY = {
    "Chunk": "framefarm.model",
    "Plan": "framefarm.model",
    "VideoSettings": "framefarm.model",
    "FrameContext": "framefarm.sketch",
    "load_sketch": "framefarm.sketch",
    "PlanRequest": "framefarm.steps.plan",
    "make_plan": "framefarm.steps.plan",
    "SketchError": "framefarm.errors",
    "UserError": "framefarm.errors",
    "render": "framefarm._api",
}

if TYPE_CHECKING:
    from framefarm._api import render
    from framefarm.errors import SketchError, UserError
    from framefarm.model import Chunk, Plan, VideoSettings
    from framefarm.sketch import FrameContext, load_sketch
    from framefarm.steps.plan import PlanRequest, make_plan


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'framefarm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
