"""matplotlib animations, unchanged: a script that makes a `FuncAnimation` (and shows or saves
it) renders as it would with `ani.save`, each worker drawing its own frames.

The script runs as `__main__` with `Animation.save` and `pyplot.show` held: the animation it
makes is kept, and what its `save` call asks for (fps, dpi) gives the video's defaults, with
the frame count from the animation (`frames`, `save_count`) and the fps from `interval` when
`save` gives none. Frame i is drawn exactly as `save` draws it: `_init_draw` once, the update
function for every frame in order, `savefig` as a raw RGBA buffer at the save's dpi, the
figure's size made even as a video writer makes it, the face colour composited on white.

Update functions are often stateful (a line that appends each frame's point), so frame i is
only right after every frame before it: a worker replays the update function for the frames
it skips, without drawing them (cheap next to a draw), and runs the script again to go back.
The plan says which mode a script needs (plan.json's `sketch_mode`, `framefarm status`):
"stateless" when frame k drawn after its own update alone is frame k drawn after every update
before it, "stateful" when it is not.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from framefarm.errors import MissingExtraError, SketchError, UserError

if TYPE_CHECKING:
    from framefarm.sketch import FrameContext, Sketch

MAX_COUNTED_FRAMES = 100_000
"""A generator of frames without `save_count` is counted up to this many."""
class Script:
    """One run of the user's script: its figure, its animation, and what `save` asked for."""

    def __init__(self, path: Path, label: str, display_name: str | None) -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.animation as animation
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise MissingExtraError(f"animation {label}", "matplotlib") from exc
        from framefarm.sketch import _exec_file

        made: list[Any] = []
        saved: list[dict[str, Any]] = []
        original_init = animation.Animation.__init__

        def keep(self: Any, *args: Any, **kwargs: Any) -> None:
            original_init(self, *args, **kwargs)
            made.append(self)

        def hold_save(self: Any, filename: object = None, *args: Any, **kwargs: Any) -> None:
            del filename, args
            saved.append(kwargs)

        with _patched(animation.Animation, "__init__", keep), \
                _patched(animation.Animation, "save", hold_save), \
                _patched(plt, "show", lambda *a, **k: None):
            self.module = _exec_file(path, label, display_name, as_main=True)
        funcs: list[Any] = [a for a in made if isinstance(a, animation.FuncAnimation)]
        if not funcs:
            raise UserError(f"animation {label} makes no matplotlib FuncAnimation when run: make "
                            "one (or give a sketch with render(ctx))")
        self.plt = plt
        self.animation: Any = funcs[-1]  # its private drawing steps are what save() runs
        self.fig = self.animation._fig
        self.save_kwargs = saved[-1] if saved else {}
        # As save(): the first-draw handler (a GUI's start) is not wanted, and neither is the
        # event source's timer.
        with contextlib.suppress(Exception):
            self.fig.canvas.mpl_disconnect(self.animation._first_draw_id)
        self.label = label

    def close(self) -> None:
        self.plt.close(self.fig)


@contextlib.contextmanager
def _patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    previous = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, previous)


class AnimationFrames:
    """Frames of one animation script in this process, drawn as `save` draws them."""

    def __init__(self, path: Path, *, label: str, display_name: str | None) -> None:
        self.path, self.label, self.display_name = path, label, display_name
        self.script = Script(path, label, display_name)
        self.data = self._frame_data()
        self.cursor = -1  # the last frame whose update ran (-1: none since _init_draw)
        self.initialised = False

    def _frame_data(self) -> list[Any]:
        seq = self.script.animation.new_saved_frame_seq()
        data = list(itertools.islice(seq, MAX_COUNTED_FRAMES))
        if not data:
            raise UserError(f"animation {self.label} has no frames: give FuncAnimation frames=N "
                            "(or a sequence, or save_count= for a generator)")
        return data

    # -- what the plan takes as defaults ---------------------------------------------------------

    def dpi(self) -> float:
        import matplotlib as mpl

        dpi = self.script.save_kwargs.get("dpi") or mpl.rcParams["savefig.dpi"]
        return float(self.script.fig.dpi if dpi == "figure" else dpi)

    def size(self) -> tuple[int, int]:
        """The frame's pixels as a video writer makes them: figure inches x dpi, even."""
        from matplotlib.animation import adjusted_figsize

        dpi = self.dpi()
        w, h = self.script.fig.get_size_inches()
        w, h = adjusted_figsize(w, h, dpi, 2)
        return round(w * dpi), round(h * dpi)

    def fps(self) -> str:
        fps = self.script.save_kwargs.get("fps")
        if fps:
            return str(fps)
        interval = float(getattr(self.script.animation, "_interval", 200) or 200)
        return str(Fraction(1000) / Fraction(interval).limit_denominator(1000))

    # -- frames -------------------------------------------------------------------------------

    def _restart(self) -> None:
        self.script.close()
        self.script = Script(self.path, self.label, self.display_name)
        self.data = self._frame_data()
        self.cursor, self.initialised = -1, False

    def draw(self, index: int, width: int, height: int, *, replay: bool = True) -> np.ndarray:
        """Frame `index` as HxWx3, after every update before it (replayed without drawing);
        without `replay`, after its own update alone (what a stateless script needs)."""
        from matplotlib import cbook
        from matplotlib import colors as mcolors

        if index >= len(self.data):
            raise UserError(f"animation {self.label} has {len(self.data)} frames, not "
                            f"{index + 1}: render at most --frames {len(self.data)}")
        if index <= self.cursor:
            self._restart()  # the update function may keep state: start again to go back
        anim, fig = self.script.animation, self.script.fig
        dpi = self.dpi()
        fig.set_size_inches(width / dpi, height / dpi, forward=False)
        facecolor = self.script.save_kwargs.get("savefig_kwargs", {}).get("facecolor") \
            or fig.get_facecolor()
        r, g, b, a = mcolors.to_rgba(facecolor)
        white = tuple(float(c) for c in a * np.array([r, g, b]) + 1 - a)
        with cbook._setattr_cm(fig.canvas, _is_saving=True, manager=None):
            try:
                if not self.initialised:
                    anim._init_draw()
                    self.initialised = True
                for skipped in range(self.cursor + 1, index) if replay else ():
                    anim._func(self.data[skipped], *anim._args)
                anim._draw_next_frame(self.data[index], blit=False)
            except Exception as exc:
                from framefarm.sketch import sketch_traceback

                raise SketchError(f"animation {self.label} failed on frame {index}: "
                                  f"{type(exc).__name__}: {exc}", frame=index,
                                  details=sketch_traceback(exc)) from None
            self.cursor = index
            buffer = io.BytesIO()
            fig.savefig(buffer, format="rgba", dpi=dpi, facecolor=white, transparent=False)
        pixels = np.frombuffer(buffer.getvalue(), dtype=np.uint8)
        if pixels.size != width * height * 4:
            raise UserError(f"animation {self.label}: a frame of {width}x{height} at {dpi:g} dpi "
                            "came out another size: give --size as the figure's inches x dpi")
        return pixels.reshape(height, width, 4)[..., :3]


def load(path: Path, *, label: str, display_name: str | None) -> Sketch:
    """The animation script at `path` as a Sketch: run once here for its defaults, and once
    per process that draws (its frames drawn as `save` would)."""
    from framefarm.sketch import Sketch, SketchDefaults

    os.environ.setdefault("MPLBACKEND", "Agg")
    frames = AnimationFrames(path, label=label, display_name=display_name)
    width, height = frames.size()
    defaults = SketchDefaults(width=width, height=height, fps=frames.fps(),
                              frames=len(frames.data))

    def render(ctx: FrameContext) -> np.ndarray:
        return frames.draw(ctx.frame, ctx.width, ctx.height)

    def verify(width: int, height: int) -> str:
        """Every process runs the script anew: a frame must come out the same each time. Which
        mode the script needs: "stateless" when a frame drawn after its own update alone is
        the frame drawn after every update before it, else "stateful" (workers replay)."""
        probe = min(3, len(frames.data) - 1)
        replayed = frames.draw(probe, width, height).copy()
        if np.array_equal(replayed, _fresh_frame(probe, width, height, replay=False)):
            return "stateless"
        if not np.array_equal(replayed, _fresh_frame(probe, width, height, replay=True)):
            raise UserError(f"animation {label}: frame {probe} differs between two runs of the "
                            "script, so its frames depend on unseeded randomness: seed it "
                            "(np.random.seed(0), random.seed(0) or np.random.default_rng(0)) so "
                            "every worker draws the same frames")
        return "stateful"

    def _fresh_frame(index: int, width: int, height: int, *, replay: bool) -> np.ndarray:
        again = AnimationFrames(path, label=label, display_name=display_name)
        try:
            return again.draw(index, width, height, replay=replay)
        finally:
            again.script.close()

    return Sketch(location=str(path), render=render, setup=None, defaults=defaults, seed=0,
                  source=path, module=frames.script.module, display_name=display_name,
                  kind="animation", verify=verify)
