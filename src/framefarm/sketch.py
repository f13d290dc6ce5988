"""Creative code: load a sketch, give it a FrameContext per frame, and turn what it returns into
pixels the encoder takes.

A sketch is a .py file, a `package.module:function`, or a storage URL of a .py file, with
`render(ctx)` and optional `setup(ctx)`; module-level WIDTH, HEIGHT, FPS, FRAMES and SEED give
defaults. Other kinds of creative code (a GLSL shader …: framefarm/kinds/) load as a Sketch too.
"""

from __future__ import annotations

import importlib
import itertools
import linecache
import os
import sys
import traceback
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from framefarm._frames import to_array
from framefarm._locations import sketch_location_kind
from framefarm._sketch_types import FrameContext, Sketch, SketchDefaults
from framefarm.errors import SketchError, UserError
from framefarm.model import parse_fps

__all__ = ["FrameContext", "FrameSource", "Sketch", "SketchDefaults", "load_sketch", "to_array"]

_PACKAGE_DIR = str(Path(__file__).resolve().parent)
_EXAMPLES_DIR = os.path.join(_PACKAGE_DIR, "examples")  # installed examples are user code
_counter = itertools.count()


def _is_framefarm(filename: str) -> bool:
    return (filename.startswith(_PACKAGE_DIR + os.sep)
            and not filename.startswith(_EXAMPLES_DIR + os.sep))


def sketch_traceback(exc: BaseException) -> str:
    """The exception's traceback with framefarm's own frames left out: only the user's code."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not _is_framefarm(os.path.abspath(f.filename))]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames),
             *traceback.format_exception_only(exc)]
    return "".join(lines).rstrip()


def _positive_int(sketch: str, name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(f"sketch {sketch}: {name} = {value!r} must be a whole number above 0")
    return value


def _read_defaults(sketch: str, module: ModuleType) -> tuple[SketchDefaults, int]:
    fps = getattr(module, "FPS", None)
    if fps is not None:
        try:
            if isinstance(fps, bool) or parse_fps(fps) <= 0:
                raise ValueError
        except (ValueError, TypeError, ZeroDivisionError):
            raise UserError(f"sketch {sketch}: FPS = {fps!r} must be a positive number "
                            "like 30, 29.97 or '30000/1001'") from None
    seed = getattr(module, "SEED", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"sketch {sketch}: SEED = {seed!r} must be a whole number of 0 or more")
    defaults = SketchDefaults(
        width=_positive_int(sketch, "WIDTH", getattr(module, "WIDTH", None)),
        height=_positive_int(sketch, "HEIGHT", getattr(module, "HEIGHT", None)),
        fps=None if fps is None else str(fps),
        frames=_positive_int(sketch, "FRAMES", getattr(module, "FRAMES", None)))
    return defaults, seed


def _exec_file(path: Path, label: str, display_name: str | None = None, *,
               as_main: bool = False) -> ModuleType:
    """Run the sketch file as a fresh module; tracebacks name `display_name` (the user's own
    file) when the code runs from a copy, such as the content-addressed one in storage.
    `as_main`: run it as a script (`__name__ == "__main__"`), as an animation script expects."""
    name = f"framefarm_sketch_{path.stem}_{next(_counter)}"
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"sketch {label} cannot be read ({exc}): give a readable .py file") from None
    filename = display_name or str(path)
    # Keep the source where tracebacks look for it, even on a machine without the user's file.
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    module = ModuleType(name)
    module.__file__ = str(path)
    if as_main:
        module.__name__ = "__main__"
    folder = str(path.parent)
    sys.path.insert(0, folder)  # so the sketch can import its sibling modules
    sys.modules[name] = module
    try:
        exec(compile(source, filename, "exec"), module.__dict__)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise SketchError(f"sketch {label} failed while loading: "
                          f"{type(exc).__name__}: {exc}", details=sketch_traceback(exc)) from None
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return module


def load_sketch(location: str, *, storage_loader: Callable[[str], Path] | None = None,
                display_name: str | None = None, kind: str | None = None) -> Sketch:
    """Load a sketch from a file path, `package.module:function`, or a storage URL.

    `display_name` is the path the user knows the sketch by, for messages and tracebacks when
    it is loaded from a copy; `kind` forces the kind of a file (else its suffix says it).
    """
    from framefarm.kinds import kind_of, load_kind

    os.environ.setdefault("MPLBACKEND", "Agg")  # pyplot sketches run headless
    where = sketch_location_kind(location)
    if where == "module":
        return _load_module(location, display_name)
    if where == "url":
        if storage_loader is None:
            raise UserError(f"sketch {location}: a storage URL needs storage to load it from")
        source = Path(storage_loader(location))
        label = Path(display_name).name if display_name else location
        return load_kind(kind_of(location, kind), source, label=label,
                         display_name=display_name or location)
    source = Path(location).expanduser()
    if not source.is_file():
        raise UserError(f"sketch not found: {location} (give the path of a .py file with render(ctx))")
    label = Path(display_name).name if display_name else source.name
    return load_kind(kind_of(location, kind), source.resolve(), label=label,
                     display_name=display_name or location)


def load_python(path: Path, *, label: str, display_name: str | None) -> Sketch:
    """A Python sketch file: run it as a fresh module and take its render(ctx)."""
    module = _exec_file(path, label, display_name if display_name != str(path) else None)
    return _from_module(module, location=str(path), label=label, source=path,
                        display_name=display_name if display_name != str(path) else None)


def _load_module(location: str, display_name: str | None) -> Sketch:
    """An installed `package.module:function`."""
    module_name, _, render_name = location.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: modules beside the user first
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"sketch {location}: cannot import {module_name!r} ({exc}); "
                        "install it or give a .py file") from None
    except Exception as exc:
        raise SketchError(f"sketch {location} failed while loading: "
                          f"{type(exc).__name__}: {exc}", details=sketch_traceback(exc)) from None
    label = Path(display_name).name if display_name else location
    return _from_module(module, location=location, label=label, source=None,
                        display_name=display_name, render_name=render_name)


def _from_module(module: ModuleType, *, location: str, label: str, source: Path | None,
                 display_name: str | None, render_name: str = "render") -> Sketch:
    render = getattr(module, render_name, None)
    if not callable(render):
        raise UserError(f"sketch {label} has no {render_name}(ctx) function: "
                        "define one that returns a frame")
    setup = getattr(module, "setup", None)
    if setup is not None and not callable(setup):
        raise UserError(f"sketch {label}: setup must be a function setup(ctx), got {type(setup).__name__}")
    defaults, seed = _read_defaults(label, module)
    return Sketch(location=location, render=render, setup=setup, defaults=defaults, seed=seed,
                  source=source, module=module, display_name=display_name)


class FrameSource:
    """Frames of one sketch at one size and rate: `setup` once, then `frame(i)` for any i."""

    def __init__(self, sketch: Sketch, *, width: int, height: int, fps: Fraction | str,
                 total_frames: int) -> None:
        self.sketch = sketch
        self.width = width
        self.height = height
        self.rate = parse_fps(fps)
        self.total_frames = total_frames
        self._fps = float(self.rate)
        self.state: Any = None
        if sketch.setup is not None:
            ctx = self._context(0, np.random.default_rng([sketch.seed]))
            self.state = self._call(sketch.setup, ctx, frame=None, what="setup")

    def _context(self, frame: int, rng: np.random.Generator) -> FrameContext:
        return FrameContext(frame=frame, t=frame / self._fps, fps=self._fps, width=self.width,
                            height=self.height, total_frames=self.total_frames, rng=rng,
                            state=self.state)

    def _call(self, fn: Callable[[FrameContext], object], ctx: FrameContext, *,
              frame: int | None, what: str) -> object:
        try:
            return fn(ctx)
        except UserError:
            raise  # the kind's own word on bad input (a shader that does not compile)
        except Exception as exc:
            where = f"on frame {frame}" if frame is not None else f"in {what}()"
            raise SketchError(f"sketch {self.sketch.name} failed {where}: {type(exc).__name__}: {exc}",
                              frame=frame, details=sketch_traceback(exc)) from None

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` as a C-contiguous uint8 HxWx3 or HxWx4 array.

        The array may be the sketch's own buffer (a matplotlib canvas is redrawn in place), so it
        is valid until the next call: copy it to keep it.
        """
        ctx = self._context(index, np.random.default_rng([self.sketch.seed, index]))
        image = self._call(self.sketch.render, ctx, frame=index, what="render")
        return to_array(image, frame=index, width=self.width, height=self.height)
