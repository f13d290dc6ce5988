"""What a loaded sketch is, for every kind of creative code: its defaults, the FrameContext its
frames get, and the Sketch itself (framefarm/sketch.py loads Python sketches and re-exports
these; framefarm/kinds/ loads the others). Kept apart so that the kinds registry and the loader
need not import each other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SketchDefaults:
    """The sketch's module-level WIDTH, HEIGHT, FPS and FRAMES, when it sets them."""

    width: int | None = None
    height: int | None = None
    fps: str | None = None
    frames: int | None = None


@dataclass(slots=True)
class FrameContext:
    """What `render(ctx)` and `setup(ctx)` get. In `setup`, `frame` is 0 and `rng` is seeded
    for set-up only; `state` is what `setup` returned (None without a setup)."""

    frame: int
    t: float
    fps: float
    width: int
    height: int
    total_frames: int
    rng: np.random.Generator
    state: Any = None

    @property
    def progress(self) -> float:
        """0.0 on the first frame, 1.0 on the last."""
        return self.frame / (self.total_frames - 1) if self.total_frames > 1 else 0.0


@dataclass
class Sketch:
    """A loaded sketch: its functions, defaults and where it came from."""

    location: str
    render: Callable[[FrameContext], object]
    setup: Callable[[FrameContext], object] | None
    defaults: SketchDefaults
    seed: int
    source: Path | None
    module: ModuleType = field(repr=False)

    display_name: str | None = None
    kind: str = "sketch"
    """What kind of creative code it is (framefarm/kinds/): sketch, shader …"""
    verify: Callable[[int, int], str | None] | None = field(default=None, repr=False)
    """The kind's check, run once by the plan at the video's size (width, height): a
    UserError when its frames would differ between processes (unseeded randomness); what it
    returns is the mode the sketch needs (an animation: "stateless" or "stateful"), kept in
    the plan as `sketch_mode`."""

    @property
    def name(self) -> str:
        """How messages name the sketch: its file name or module:function."""
        if self.display_name:
            return Path(self.display_name).name
        return self.source.name if self.source else self.location
