"""A sketch's assets (framefarm/assets.py): files and folders beside it, named by its ASSETS
list or `--asset`, stored with it as one content-addressed bundle and laid out beside it in
every job, so a job that never saw the user's folder renders the same frames."""

from __future__ import annotations

import shutil
import textwrap
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from framefarm.sketch import FrameSource, load_sketch
from framefarm.video import read_frames
from tests.conftest import psnr, render_and_encode, run_cli

pytestmark = [pytest.mark.integration]

W, H, FRAMES = 64, 48, 12

SKETCH = textwrap.dedent("""
    from pathlib import Path
    import numpy as np
    import shading  # a module beside the sketch: an asset too

    ASSETS = ["data/", "shading.py"]
    PALETTE = np.load(Path(__file__).parent / "data" / "palette.npy")

    def render(ctx):
        x = np.arange(ctx.width)[None, :, None] / ctx.width  # a smooth ramp of this frame's colour
        colour = PALETTE[ctx.frame % len(PALETTE)][None, None, :]
        return shading.shade(np.broadcast_to(colour * (0.4 + 0.6 * x), (ctx.height, ctx.width, 3)),
                             ctx.frame)
    """)

SHADING = textwrap.dedent("""
    import numpy as np

    def shade(pixels, frame):
        return (pixels * (0.5 + frame / 24)).clip(0, 255).astype(np.uint8)
    """)


def _project(root: Path) -> Path:
    """The user's folder: the sketch, its data folder and its sibling module."""
    root.mkdir(parents=True)
    (root / "data").mkdir()
    rng = np.random.default_rng(3)
    np.save(root / "data" / "palette.npy", rng.integers(0, 255, (40, 3)).astype(np.float64))
    (root / "data" / "README.txt").write_text("colours\n")
    (root / "shading.py").write_text(SHADING)
    sketch = root / "palette.py"
    sketch.write_text(SKETCH)
    return sketch


def _expected(sketch: Path) -> list[np.ndarray]:
    source = FrameSource(load_sketch(str(sketch)), width=W, height=H, fps=Fraction(30),
                         total_frames=FRAMES)
    return [source.frame(i)[..., :3].copy() for i in range(FRAMES)]


def _assert_video(video: Path, expected: list[np.ndarray]) -> None:
    frames = list(read_frames(video))
    assert len(frames) == FRAMES
    for i, frame in enumerate(frames):
        assert psnr(frame, expected[i]) >= 35, f"frame {i}"
        assert psnr(frame, expected[(i + 5) % FRAMES]) < 30  # this frame's colour, no other's


def test_a_sketch_renders_with_its_declared_assets_in_workers(tmp_path: Path) -> None:
    sketch = _project(tmp_path / "project")
    expected = _expected(sketch)
    for name in ("a", "b"):  # twice: the bundle is stored once
        done = run_cli("render", str(sketch), "-o", str(tmp_path / f"{name}.mp4"), "--frames",
                       str(FRAMES), "--size", f"{W}x{H}", "--per-job", "3", "--workers", "2",
                       cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        _assert_video(tmp_path / f"{name}.mp4", expected)
    bundles = list((tmp_path / "framefarm-data" / "bundles").iterdir())
    assert len(bundles) == 1
    stored = sorted(p.relative_to(bundles[0]).as_posix() for p in bundles[0].rglob("*")
                    if p.is_file())
    assert stored == ["data/README.txt", "data/palette.npy", "palette.py", "shading.py"]


def test_jobs_that_never_saw_the_users_folder_render_the_same(tmp_path: Path) -> None:
    """As on AWS Batch: the plan job stores the bundle (--asset names one more file), then the
    user's folder is gone, and the render jobs run elsewhere from storage alone."""
    sketch = _project(tmp_path / "project")
    (sketch.parent / "extra.txt").write_text("named with FRAMEFARM_ASSETS\n")
    expected = _expected(sketch)
    base = {"FRAMEFARM_STORAGE": (tmp_path / "bucket").as_uri(),
            "FRAMEFARM_JOBLOG": f"sqlite:///{tmp_path}/log.db"}
    plan = run_cli("job", cwd=tmp_path, env={
        **base, "JOB_TYPE": "plan", "FRAMEFARM_SKETCH": str(sketch),
        "FRAMEFARM_ASSETS": "extra.txt", "TOTAL_FRAMES": str(FRAMES),
        "FRAMES_PER_RENDER_JOB": "4", "FRAMEFARM_WIDTH": str(W), "FRAMEFARM_HEIGHT": str(H),
        "FRAMEFARM_OUTPUT": str(tmp_path / "out.mp4")})
    assert plan.returncode == 0, plan.stderr
    run_id = plan.stdout.strip()
    shutil.rmtree(sketch.parent)  # the laptop's folder is not on the render nodes
    elsewhere = tmp_path / "node"
    elsewhere.mkdir()
    render_and_encode(base, run_id, range(3), cwd=elsewhere)
    _assert_video(tmp_path / "out.mp4", expected)
    [bundle] = (tmp_path / "bucket" / "bundles").iterdir()
    assert (bundle / "extra.txt").read_text() == "named with FRAMEFARM_ASSETS\n"


@pytest.mark.parametrize("change, said", [
    ({"asset": "missing.csv"}, "asset missing.csv of sketch palette.py not found"),
    ({"asset": "../outside.txt"}, "asset ../outside.txt of sketch palette.py is outside the "
                                  "sketch's folder"),
    ({"assets_line": "ASSETS = 'data/'"}, "sketch palette.py: ASSETS must be a list of paths"),
])
def test_bad_assets_are_one_line_before_anything_runs(tmp_path: Path, change: dict[str, str],
                                                      said: str) -> None:
    sketch = _project(tmp_path / "project")
    (tmp_path / "outside.txt").write_text("x")
    if "assets_line" in change:
        sketch.write_text(SKETCH.replace('ASSETS = ["data/", "shading.py"]', change["assets_line"]))
    extra = ["--asset", change["asset"]] if "asset" in change else []
    done = run_cli("render", str(sketch), "-o", str(tmp_path / "o.mp4"), "--frames", "2",
                   "--size", f"{W}x{H}", *extra, cwd=tmp_path)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"framefarm: {said}"), line
    assert not (tmp_path / "framefarm-data" / "bundles").exists()
