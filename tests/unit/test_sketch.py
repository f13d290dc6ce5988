"""Loading creative code, the frame context, and turning what a sketch returns into pixels."""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from framefarm.errors import SketchError, UserError
from framefarm.sketch import FrameSource, load_sketch, to_array

Write = Callable[..., Path]

GRADIENT = """
    import numpy as np
    WIDTH, HEIGHT, FPS, FRAMES, SEED = 32, 16, 25, 50, 3
    calls = []

    def setup(ctx):
        calls.append(ctx.frame)
        return {"base": 10}

    def render(ctx):
        value = ctx.state["base"] + ctx.frame
        return np.full((ctx.height, ctx.width, 3), value, np.uint8)
"""


def source_of(path: Path | str, **kw: object) -> FrameSource:
    sketch = load_sketch(str(path))
    opts = {"width": 32, "height": 16, "fps": Fraction(25), "total_frames": 50} | kw
    return FrameSource(sketch, **opts)  # type: ignore[arg-type]


def test_load_by_path_reads_defaults_and_runs_setup_once(write_sketch: Write) -> None:
    path = write_sketch(GRADIENT)
    sketch = load_sketch(str(path))
    assert (sketch.defaults.width, sketch.defaults.height, sketch.defaults.fps,
            sketch.defaults.frames, sketch.seed) == (32, 16, "25", 50, 3)
    assert sketch.source == path.resolve() and sketch.name == "sketch.py"
    source = FrameSource(sketch, width=32, height=16, fps=Fraction(25), total_frames=50)
    assert source.frame(7)[0, 0, 0] == 17
    assert source.frame(8)[0, 0, 0] == 18
    assert sketch.module.calls == [0]


def test_load_module_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "anim.py").write_text(
        "import numpy as np\nWIDTH = 8\n"
        "def draw(ctx):\n    return np.zeros((ctx.height, ctx.width, 3), np.uint8) + 5\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sketch = load_sketch("mypkg.anim:draw")
    assert sketch.source is None and sketch.defaults.width == 8
    assert FrameSource(sketch, width=8, height=4, fps="30", total_frames=1).frame(0).max() == 5
    sys.modules.pop("mypkg.anim", None)


def test_load_from_storage_url_names_the_users_file(write_sketch: Write) -> None:
    copy = write_sketch("def render(ctx):\n    raise KeyError('lost')\n", "0123abcd.py")
    asked: list[str] = []

    def loader(url: str) -> Path:
        asked.append(url)
        return copy

    sketch = load_sketch("s3://bucket/sketches/0123abcd.py", storage_loader=loader,
                         display_name="/home/me/art/spiral.py")
    assert asked == ["s3://bucket/sketches/0123abcd.py"]
    with pytest.raises(SketchError) as info:
        FrameSource(sketch, width=4, height=4, fps="1", total_frames=1).frame(0)
    assert "sketch spiral.py failed on frame 0: KeyError" in str(info.value)
    assert 'File "/home/me/art/spiral.py", line 2, in render' in info.value.details
    assert "raise KeyError('lost')" in info.value.details  # the source line, without the file


@pytest.mark.parametrize("source, message", [
    ("WIDTH = 4\n", "has no render(ctx) function"),
    ("render = 3\n", "has no render(ctx) function"),
    ("def render(ctx): pass\nsetup = 'x'\n", "setup must be a function"),
    ("def render(ctx): pass\nWIDTH = -4\n", "WIDTH = -4 must be a whole number above 0"),
    ("def render(ctx): pass\nFRAMES = 2.5\n", "FRAMES = 2.5 must be a whole number above 0"),
    ("def render(ctx): pass\nFPS = 'fast'\n", "FPS = 'fast' must be a positive number"),
    ("def render(ctx): pass\nSEED = -1\n", "SEED = -1 must be a whole number"),
])
def test_bad_sketches_are_user_errors(write_sketch: Write, source: str, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_sketch(str(write_sketch(source)))


def test_missing_and_wrong_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"sketch not found: nope\.py"):
        load_sketch("nope.py")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(UserError, match=r"is not a \.py file"):
        load_sketch(str(text))
    with pytest.raises(UserError, match="cannot import 'no_such_module_xyz'"):
        load_sketch("no_such_module_xyz:render")


def test_error_while_importing_the_sketch(write_sketch: Write) -> None:
    path = write_sketch("import numpy\nx = 1 / 0\ndef render(ctx): pass\n", "broken.py")
    with pytest.raises(SketchError) as info:
        load_sketch(str(path))
    assert "broken.py failed while loading: ZeroDivisionError: division by zero" in str(info.value)
    assert "line 2" in info.value.details


def test_sketch_traceback_shows_only_the_sketch(write_sketch: Write) -> None:
    path = write_sketch("""
        def inner(i):
            return [1, 2][i]

        def render(ctx):
            return inner(ctx.frame + 5)
    """, "art.py")
    with pytest.raises(SketchError) as info:
        source_of(path).frame(4)
    err = info.value
    assert err.frame == 4
    assert str(err) == "sketch art.py failed on frame 4: IndexError: list index out of range"
    assert f'File "{path}", line 6, in render' in err.details
    assert "in inner" in err.details
    assert "framefarm/sketch.py" not in err.details and "framefarm" not in err.details.replace(
        str(path), "")
    # It crosses process boundaries intact.
    again = pickle.loads(pickle.dumps(err))
    assert (str(again), again.frame, again.details) == (str(err), err.frame, err.details)


def test_error_in_setup_names_setup(write_sketch: Write) -> None:
    path = write_sketch("def setup(ctx):\n    raise OSError('no font')\ndef render(ctx): pass\n")
    with pytest.raises(SketchError, match=r"failed in setup\(\): OSError: no font"):
        source_of(path)


def test_context_time_and_per_frame_rng_are_deterministic(write_sketch: Write) -> None:
    path = write_sketch("""
        import numpy as np
        def render(ctx):
            img = np.zeros((ctx.height, ctx.width, 3), np.uint8)
            img[0, 0] = ctx.rng.integers(0, 256, 3)
            img[0, 1, 0] = int(ctx.t * 10)
            img[0, 2, 0] = int(ctx.progress * 100)
            return img
    """)
    source = source_of(path, fps=Fraction(10), total_frames=11)
    first, again, other = source.frame(5), source.frame(5), source.frame(6)
    assert np.array_equal(first, again)  # same frame, same pixels, whatever ran before
    assert not np.array_equal(first[0, 0], other[0, 0])
    assert first[0, 1, 0] == 5  # t = 5 / 10 s
    assert first[0, 2, 0] == 50  # progress halfway
    assert np.array_equal(source_of(path, fps=Fraction(10), total_frames=11).frame(5), first)


class TestToArray:
    def test_correct_array_is_returned_without_a_copy(self) -> None:
        for channels in (3, 4):
            pixels = np.zeros((6, 8, channels), np.uint8)
            out = to_array(pixels, frame=0, width=8, height=6)
            assert np.shares_memory(out, pixels) and out.shape == (6, 8, channels)

    def test_non_contiguous_array_is_made_contiguous(self) -> None:
        pixels = np.zeros((6, 16, 3), np.uint8)[:, ::2]
        out = to_array(pixels, frame=0, width=8, height=6)
        assert out.flags.c_contiguous and out.shape == (6, 8, 3)

    @pytest.mark.parametrize("mode, channels", [("RGB", 3), ("RGBA", 4), ("L", 3), ("P", 3),
                                                ("LA", 4)])
    def test_pil_images(self, mode: str, channels: int) -> None:
        image = Image.new("RGB", (8, 6), (200, 100, 50)).convert(mode)
        out = to_array(image, frame=0, width=8, height=6)
        assert out.shape == (6, 8, channels) and out.dtype == np.uint8
        if mode in ("RGB", "RGBA"):
            assert tuple(out[2, 3, :3]) == (200, 100, 50)

    def test_matplotlib_figure_pixels(self) -> None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(0.8, 0.6), dpi=10)
        fig.patch.set_facecolor((1.0, 0.0, 0.0))
        out = to_array(fig, frame=0, width=8, height=6)
        assert out.shape == (6, 8, 4)
        assert tuple(out[3, 4]) == (255, 0, 0, 255)

    def test_figure_of_the_wrong_size(self) -> None:
        from matplotlib.figure import Figure

        with pytest.raises(SketchError, match=r"figure of 10x5 pixels; expected 8x6 .*figsize"):
            to_array(Figure(figsize=(1, 0.5), dpi=10), frame=3, width=8, height=6)

    @pytest.mark.parametrize("image, message", [
        (np.zeros((6, 8, 3), np.float64), "frame 9: render() returned a float64 array of shape "
                                          "(6, 8, 3); expected uint8 of shape (6, 8, 3) or (6, 8, 4)"),
        (np.zeros((6, 8), np.uint8), "a uint8 array of shape (6, 8); expected"),
        (np.zeros((8, 6, 3), np.uint8), "a uint8 array of shape (8, 6, 3); expected"),
        (np.zeros((6, 8, 2), np.uint8), "shape (6, 8, 2)"),
        (Image.new("RGB", (4, 4)), "frame 9: render() returned a 4x4 PIL image; expected 8x6"),
        (None, "frame 9: render() returned NoneType; expected a NumPy uint8"),
        ([[0]], "returned list"),
    ])
    def test_wrong_frames_name_frame_got_and_expected(self, image: object, message: str) -> None:
        with pytest.raises(SketchError) as info:
            to_array(image, frame=9, width=8, height=6)
        assert message in str(info.value)
        assert info.value.frame == 9
