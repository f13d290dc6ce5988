"""Kinds of creative code: what a sketch file is, and the module that turns it into frames.

Each kind is one module with `load(path, *, label, display_name) -> Sketch`: it opens the
source once per process and gives a `render(ctx)` that returns frame i as RGB(A), plus the
defaults it knows (size, fps, frames). The pipeline sees only the Sketch, so a new kind
(Manim scenes, pyvista, vispy) is one module more and one line here.

The kind is chosen from the file (its suffix), or forced with `--kind` (FRAMEFARM_KIND); a
sketch stored for the render jobs keeps its kind's suffix (sketches/{sha256}.frag), so every
job loads it as the plan did.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import TYPE_CHECKING

from framefarm.errors import UserError

if TYPE_CHECKING:
    from framefarm._sketch_types import Sketch

KINDS = {
    "sketch": ("framefarm.sketch:load_python", ".py"),
    "shader": ("framefarm.kinds.shader:load", ".frag"),
    "animation": ("framefarm.kinds.animation:load", ".anim.py"),
    "blender": ("framefarm.kinds.blender:load", ".blend"),
}
"""Kind -> its loader ("module:function") and the suffix its stored copy gets."""

SUFFIXES = {".py": "sketch", ".frag": "shader", ".glsl": "shader", ".fs": "shader",
            ".blend": "blender"}
"""File suffix -> the kind it means (a .py that makes a matplotlib animation and defines no
render(ctx) is an animation; its stored copy is .anim.py)."""
THREADED_KINDS = frozenset({"blender"})
"""Kinds whose renderer fills every core a job has by itself (Cycles' threads): their jobs draw
in their own process instead of starting drawing processes."""


def kind_of(path: str, forced: str | None = None) -> str:
    """The kind of the sketch file at `path`: `forced` (--kind) when given, else by suffix."""
    if forced:
        if forced not in KINDS:
            raise UserError(f"unknown kind {forced!r}: use one of {', '.join(KINDS)}")
        return forced
    if path.lower().endswith(".anim.py"):
        return "animation"
    found = SUFFIXES.get(Path(path).suffix.lower())
    if found == "sketch" and _makes_animation(path):
        return "animation"
    if found is None:
        raise UserError(f"sketch {path} is not a .py file: give a Python file with render(ctx), "
                        "a GLSL shader (.frag, .glsl), a Blender scene (.blend), or name its "
                        "kind with --kind")
    return found


_MAKES_ANIMATION = re.compile(r"\b(FuncAnimation|ArtistAnimation)\b")
_DEFINES_RENDER = re.compile(r"^def\s+render\s*\(", re.MULTILINE)


def looks_like_animation(source: str) -> bool:
    """Python source that makes a matplotlib animation and defines no render(ctx) (read here,
    not in kinds/animation.py, so choosing a kind imports no NumPy or matplotlib)."""
    return bool(_MAKES_ANIMATION.search(source)) and not _DEFINES_RENDER.search(source)


def _makes_animation(path: str) -> bool:
    """A local .py file that makes a matplotlib animation and defines no render(ctx)."""
    try:
        return looks_like_animation(Path(path).expanduser().read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return False  # a URL, or unreadable: the loader says what is wrong


def draws_threaded(location: str) -> bool:
    """Whether the sketch at `location` is of a kind that threads itself (by its suffix:
    a stored sketch keeps its kind's)."""
    return SUFFIXES.get(Path(location).suffix.lower()) in THREADED_KINDS


def suffix_of(kind: str) -> str:
    """The suffix a stored sketch of `kind` gets."""
    return KINDS[kind][1]


def load_kind(kind: str, path: Path, *, label: str, display_name: str | None) -> Sketch:
    """Load the sketch file at `path` as `kind`."""
    module_name, _, function = KINDS[kind][0].partition(":")
    loader = getattr(importlib.import_module(module_name), function)
    sketch: Sketch = loader(path, label=label, display_name=display_name)
    return sketch
