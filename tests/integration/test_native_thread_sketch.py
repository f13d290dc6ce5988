"""A sketch whose setup starts native threads renders in worker processes without hanging
(issue 14, point 6). Its setup makes a Mesa EGL context with llvmpipe's rasterizer threads on
(LP_NUM_THREADS=2: threads Python's `threading` cannot see), and every frame is drawn with that
context, so the plan's probe frame runs it in the command's own process too. A worker or drawer
forked from a process holding those threads inherits their locks without the threads and waits
for ever (moderngl and pyvista did, before workers started clean); here the run must end in
bounded time with every frame the sketch's own."""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from framefarm.video import read_frames
from tests.conftest import psnr, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.shader]

W, H, FRAMES = 64, 48, 24

SKETCH = textwrap.dedent("""
    import json, os
    import numpy as np

    def setup(ctx):
        os.environ["LP_NUM_THREADS"] = "2"  # llvmpipe's own threads, started with the context
        import moderngl
        before = len(os.listdir("/proc/self/task"))
        gl = moderngl.create_standalone_context(backend="egl")
        fbo = gl.simple_framebuffer((ctx.width, ctx.height))
        fbo.use()
        gl.clear(0.0, 0.0, 0.0, 1.0)
        fbo.read(components=3)
        after = len(os.listdir("/proc/self/task"))
        with open(os.path.join(os.environ["THREADS_SEEN"], f"{os.getpid()}.json"), "w") as out:
            json.dump({"before": before, "after": after,
                       "in_command": os.getppid() == int(os.environ["TEST_PID"])}, out)
        return gl, fbo

    def render(ctx):
        gl, fbo = ctx.state
        f = ctx.frame
        gl.clear((f * 10 % 256) / 255, (255 - f * 7 % 256) / 255, 0.5, 1.0)
        pixels = np.frombuffer(fbo.read(components=3), np.uint8)
        return pixels.reshape(ctx.height, ctx.width, 3)[::-1]
""")


def _expected(frame: int) -> np.ndarray:
    color = np.array([frame * 10 % 256, 255 - frame * 7 % 256, 128], np.uint8)
    return np.broadcast_to(color, (H, W, 3))


@pytest.fixture(autouse=True, scope="module")
def _headless_gl() -> None:
    """Mesa's EGL (Debian's libegl1 libegl-mesa0 libgl1-mesa-dri), which .ci/run installs."""
    from framefarm.errors import UserError
    from framefarm.kinds.shader import ShaderFrames

    try:
        ShaderFrames("#version 330\nout vec4 c;\nvoid main() { c = vec4(1.0); }\n",
                     label="probe", width=8, height=8)
    except UserError as exc:
        pytest.skip(f"no headless OpenGL: {exc}")


def test_a_sketch_whose_setup_starts_mesa_threads_renders_in_workers(tmp_path: Path) -> None:
    """Chunk sizes left to the plan, which draws a probe frame (so the command's own process
    holds llvmpipe's threads), then 2 workers: every process that set the sketch up started
    native threads, and the run ends in bounded time with the sketch's own frames."""
    (tmp_path / "gl_setup.py").write_text(SKETCH)
    seen = tmp_path / "threads"
    seen.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "LP_NUM_THREADS"}
    began = time.monotonic()
    done = run_cli("render", "gl_setup.py", "-o", "gl.mp4", "--frames", str(FRAMES),
                   "--size", f"{W}x{H}", "--workers", "2", "--frame-timeout", "20", cwd=tmp_path,
                   env={**env, "THREADS_SEEN": str(seen), "TEST_PID": str(os.getpid())},
                   timeout=150)
    seconds = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    assert seconds < 90, f"{seconds:.0f} s: a worker waited on a lock it inherited?"
    setups = [json.loads(p.read_text()) for p in seen.glob("*.json")]
    assert all(s["after"] > s["before"] for s in setups), setups  # llvmpipe's threads started
    # the plan's probe frame set the sketch up in the command's own process, before any worker
    # started, and the workers set it up again in their own
    assert [s["in_command"] for s in setups].count(True) == 1, setups
    assert len(setups) >= 2, setups
    frames = list(read_frames(tmp_path / "gl.mp4"))
    assert len(frames) == FRAMES
    for i, frame in enumerate(frames):
        assert psnr(frame, _expected(i)) >= 35, f"frame {i}"
        assert psnr(frame, _expected(i)) > psnr(frame, _expected((i + 12) % FRAMES)) + 3
