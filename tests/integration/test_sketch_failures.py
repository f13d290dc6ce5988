"""A sketch that fails on one frame fails the run, names the frame, keeps every other segment."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from framefarm.storage import open_storage
from tests.conftest import run_cli

pytestmark = pytest.mark.integration

RAISES_ON_57 = """
    import numpy as np

    def helper(frame):
        if frame == 57:
            raise ValueError("the moon is in the wrong place")

    def render(ctx):
        helper(ctx.frame)
        return np.full((ctx.height, ctx.width, 3), ctx.frame, np.uint8)
"""


def test_error_on_frame_57(workdir: Path, write_sketch: Callable[..., Path]) -> None:
    sketch = write_sketch(RAISES_ON_57, "moon.py")
    done = run_cli("render", str(sketch), "-o", "moon.mp4", "--frames", "100", "--per-job", "10",
                   "--size", "64x48", "--run-id", "moon", "--workers", "2", cwd=workdir)
    assert done.returncode == 2, done.stderr
    assert "frame 57" in done.stderr
    assert "ValueError: the moon is in the wrong place" in done.stderr
    # The sketch's own traceback, with its lines, and none of framefarm's internals.
    assert "moon.py" in done.stderr and "in helper" in done.stderr
    assert "framefarm/steps" not in done.stderr and "framefarm/sketch.py" not in done.stderr
    assert not (workdir / "moon.mp4").exists()

    status = run_cli("status", "moon", "--json", cwd=workdir)
    report = json.loads(status.stdout)
    assert report["status"] == "FAILED"
    by_job = {j["job"]: j for j in report["jobs"]}
    assert by_job["render:5"]["status"] == "FAILED"
    assert "frame 57" in by_job["render:5"]["error"]
    assert all(by_job[f"render:{i}"]["status"] == "SUCCEEDED" for i in range(10) if i != 5)
    assert "encode" not in by_job
    storage = open_storage(str(workdir / "framefarm-data"))
    assert storage.list("runs/moon/segments/") == [
        f"runs/moon/segments/{i:05d}.mp4" for i in range(10) if i != 5]


def test_wrong_shape_names_frame_and_shapes(workdir: Path, write_sketch: Callable[..., Path]) -> None:
    sketch = write_sketch("""
        import numpy as np
        def render(ctx):
            return np.zeros((10, 10, 3), np.float32)
    """)
    done = run_cli("render", str(sketch), "-o", "x.mp4", "--frames", "3", "--size", "64x48",
                   cwd=workdir)
    assert done.returncode == 2
    # The plan's probe frame (the middle one) already shows it, before any render job starts.
    assert "frame 1:" in done.stderr
    assert "float32" in done.stderr and "(10, 10, 3)" in done.stderr and "(48, 64, 3)" in done.stderr
    assert "Traceback" not in done.stderr


def test_wrong_shape_in_a_render_job(workdir: Path, write_sketch: Callable[..., Path]) -> None:
    sketch = write_sketch("""
        import numpy as np
        def render(ctx):
            if ctx.frame == 4:
                return np.zeros((ctx.height, ctx.width), np.uint8)
            return np.zeros((ctx.height, ctx.width, 3), np.uint8)
    """)
    done = run_cli("render", str(sketch), "-o", "x.mp4", "--frames", "6", "--per-job", "2",
                   "--size", "64x48", "--run-id", "shape", cwd=workdir)
    assert done.returncode == 2
    assert "frame 4: render() returned a uint8 array of shape (48, 64)" in done.stderr
    report = json.loads(run_cli("status", "shape", "--json", cwd=workdir).stdout)
    assert [j["status"] for j in report["jobs"] if j["kind"] == "render"] == [
        "SUCCEEDED", "SUCCEEDED", "FAILED"]
