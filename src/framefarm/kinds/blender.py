"""Blender scenes: `framefarm render scene.blend` with the scene's own settings.

The scene is opened once per process with the `bpy` module (`pip install 'framefarm[blender]'`
in an environment of its own: bpy 5.0.1, the newest built for CPython 3.11, needs NumPy 1.x).
Its size (resolution x percentage, made even), its fps (fps / fps_base) and its frames (start to
end by step) are the video's defaults, and flags override them. Frame i is the scene's frame
`frame_start + i * frame_step`: `frame_set`, `render.render()`, the Render Result saved as a BMP
in memory (/dev/shm) and read back — display-referred, with the scene's view transform, as
Blender's own animation render writes its images.

Engines: Cycles on the CPU (a GPU device set in the scene is taken as CPU: render nodes have
none), and Workbench and EEVEE, which draw through OpenGL on a headless EGL context (Mesa's
llvmpipe without a GPU: Workbench is quick there, EEVEE slow, ~30 s for its first 320x180
frame, as it compiles its shaders on the CPU). Every frame gets its own Cycles seed, Blender's
hash of the scene's seed and the frame number (its "Animated Seed", which framefarm turns on),
so the noise does not freeze over a moving picture and a frame renders the same in any process,
whatever it rendered before, as in Blender's own animation render.

Cycles fills every core it is given, so a Blender job draws in its own process with
`FRAMEFARM_JOB_CPUS` threads (`render.threads_mode = 'FIXED'`; all of the machine's when unset)
instead of starting drawing processes (`THREADED_KINDS` in framefarm/kinds/). On one machine
that is about what Blender's own animation render does; the gain is the fan-out over AWS Batch
or Temporal workers. Blender's progress lines (`Fra:1 Mem:…`) are kept off the terminal.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from framefarm import config
from framefarm.errors import UserError

if TYPE_CHECKING:
    from framefarm.sketch import FrameContext, Sketch

_MAGICS = (b"BLENDER", b"\x28\xb5\x2f\xfd", b"\x1f\x8b")
"""How a .blend file starts: plain, zstd-compressed (Blender 3+) or gzip-compressed."""
_opened: dict[str, Any] = {}
"""The scene file this process has open (bpy holds one at a time): its path -> its scene."""


def _bpy(label: str) -> ModuleType:
    try:
        bpy = importlib.import_module("bpy")
    except ImportError:
        raise UserError(f"Blender scene {label} needs bpy: pip install 'framefarm[blender]' in an "
                        "environment of its own (bpy 5.0.1 needs NumPy 1.x; see the README)") \
            from None
    _drop_blender_paths()
    return bpy


def _drop_blender_paths() -> None:
    """Take bpy's own script folders off sys.path once it is imported. Processes started by
    spawn or a forkserver are given this process's sys.path, and there bpy's scripts/modules
    (a pure-Python `bpy` package) would come before the real module and shadow it."""
    marker = f"{os.sep}bpy{os.sep}"
    sys.path[:] = [p for p in sys.path
                   if not (marker in p and f"{os.sep}scripts" in p)
                   and not p.endswith(f"{os.sep}scripts{os.sep}addons{os.sep}modules")]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Blender's C code prints progress (`Fra:1 Mem:…`, `Read blend:`) to the process's
    standard output: send it to /dev/null while bpy works (stderr, where errors go, stays)."""
    sys.stdout.flush()
    saved = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


def check_file(path: Path, label: str) -> None:
    """Refuse what is no .blend file (UserError), before bpy opens it."""
    try:
        with path.open("rb") as file:
            head = file.read(8)
    except OSError as exc:
        raise UserError(f"Blender scene {label} cannot be read ({exc}): give a readable .blend "
                        "file") from None
    if not head.startswith(_MAGICS):
        raise UserError(f"Blender scene {label} is not a .blend file: save the scene from "
                        "Blender (File > Save) and give that file")


def open_scene(path: Path, label: str) -> Any:
    """The scene of the .blend at `path`, opened in this process (once; bpy holds one file),
    checked: it has a camera."""
    key = str(path.resolve())
    if key in _opened:
        return _opened[key]
    check_file(path, label)
    bpy = _bpy(label)
    _opened.clear()
    try:
        with quiet():
            bpy.ops.wm.open_mainfile(filepath=key, load_ui=False)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no message"
        raise UserError(f"Blender scene {label} does not open: {first}: save it again from "
                        "Blender 5.0 or older") from None
    scene = bpy.context.scene
    if scene.camera is None:
        raise UserError(f"Blender scene {label} has no camera: add one and make it the scene's "
                        "camera (Scene properties > Camera)")
    if scene.render.engine == "CYCLES":
        scene.cycles.device = "CPU"  # render nodes have no GPU
    _opened[key] = scene
    return scene


def scene_frames(scene: Any) -> range:
    """The scene's own frame numbers, start to end by step."""
    return range(scene.frame_start, scene.frame_end + 1, max(1, scene.frame_step))


def scene_defaults(scene: Any) -> tuple[int, int, str, int]:
    """Width and height (resolution x percentage, made even), fps (fps / fps_base) and frames."""
    render = scene.render
    width = max(2, render.resolution_x * render.resolution_percentage // 100 // 2 * 2)
    height = max(2, render.resolution_y * render.resolution_percentage // 100 // 2 * 2)
    fps = Fraction(render.fps) / Fraction(render.fps_base).limit_denominator(1001)
    return width, height, str(fps), len(scene_frames(scene))


def _threads() -> int:
    """Threads a frame may use: the job's CPUs (FRAMEFARM_JOB_CPUS), else every core here."""
    try:
        cpus = int(os.environ.get(config.JOB_CPUS, "0"))
    except ValueError:
        cpus = 0
    return cpus if cpus > 0 else (os.cpu_count() or 1)


def render_frame(scene: Any, index: int, width: int, height: int) -> np.ndarray:
    """Scene frame `frame_start + index * frame_step` as HxWx3 uint8, at width x height."""
    import bpy
    from PIL import Image

    frames = scene_frames(scene)
    number = frames.start + index * frames.step
    render = scene.render
    render.resolution_x, render.resolution_y, render.resolution_percentage = width, height, 100
    render.threads_mode, render.threads = "FIXED", _threads()
    if render.engine == "CYCLES":
        scene.cycles.use_animated_seed = True  # each frame its own seed: a hash of seed and frame
    folder = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    image = Path(folder) / f"framefarm-blender-{os.getpid()}.bmp"
    try:
        with quiet():
            scene.frame_set(number)
            bpy.ops.render.render(scene=scene.name)
            bpy.data.images["Render Result"].save_render(filepath=str(image), scene=scene)
        with Image.open(image) as saved:
            return np.asarray(saved.convert("RGB"), dtype=np.uint8)
    finally:
        image.unlink(missing_ok=True)


def load(path: Path, *, label: str, display_name: str | None) -> Sketch:
    """The .blend at `path` as a Sketch, opened and checked here (once per process)."""
    from framefarm.sketch import Sketch, SketchDefaults

    scene = open_scene(path, label)
    width, height, fps, frames = scene_defaults(scene)

    def render(ctx: FrameContext) -> np.ndarray:
        opened = open_scene(path, label)  # the same scene, unless this process opened another
        return render_frame(opened, ctx.frame, ctx.width, ctx.height)

    module = ModuleType(f"framefarm_blender_{path.stem}")
    module.__file__ = str(path)
    return Sketch(location=str(path), render=render, setup=None,
                  defaults=SketchDefaults(width=width, height=height, fps=fps, frames=frames),
                  seed=0, source=path, module=module, display_name=display_name, kind="blender")
