"""GLSL shaders (framefarm/kinds/shader.py) end to end: a Shadertoy shader pasted as it is and a
plain GLSL program render through the local runner and through the job contract (`framefarm
job` processes, as AWS Batch runs them), every frame compared with the same shader drawn in one
process; bad shaders are one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from framefarm.joblog import open_joblog
from framefarm.kinds.shader import ShaderFrames
from framefarm.video import read_frames
from tests.conftest import EXAMPLES, psnr, render_and_encode, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.shader]


@pytest.fixture(autouse=True, scope="module")
def _headless_gl() -> None:
    """The shader tests need Mesa's EGL (Debian's libegl1 libegl-mesa0 libgl1-mesa-dri), which
    .ci/run installs; on a machine without it they say so."""
    from framefarm.errors import UserError

    try:
        ShaderFrames(PLAIN, label="probe", width=8, height=8)
    except UserError as exc:
        pytest.skip(f"no headless OpenGL: {exc}")

PLAIN = """#version 330
uniform vec3 iResolution;
uniform int iFrame;
out vec4 color;
void main() {
    vec2 uv = gl_FragCoord.xy / iResolution.xy;
    color = vec4(uv.x, uv.y, float(iFrame % 10) / 10.0, 1.0);
}
"""


def _expected(source: str, frames: int, size: tuple[int, int], fps: float = 30.0) -> list[np.ndarray]:
    """The shader's frames drawn in this one process."""
    gl = ShaderFrames(source, label="test", width=size[0], height=size[1])
    return [gl.draw(i, fps).copy() for i in range(frames)]


def _assert_frames(video: Path, expected: list[np.ndarray]) -> None:
    frames = list(read_frames(video))
    assert len(frames) == len(expected)
    for i, (got, want) in enumerate(zip(frames, expected, strict=True)):
        assert psnr(got, want) >= 35, f"frame {i}"
        other = expected[(i + len(expected) // 2) % len(expected)]
        assert psnr(got, want) > psnr(got, other) + 3, f"frame {i}"  # its own, not another's


def test_a_shadertoy_shader_renders_in_worker_processes(tmp_path: Path) -> None:
    """The shipped kaleidoscope, unchanged, in 4 chunks on 2 workers: each frame is the
    shader's own at iTime = frame / fps, whichever process drew it."""
    shader = EXAMPLES / "kaleidoscope.frag"
    done = run_cli("render", str(shader), "-o", str(tmp_path / "k.mp4"), "--frames", "24",
                   "--size", "320x192", "--per-job", "6", "--workers", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "24 frames in" in done.stdout
    _assert_frames(tmp_path / "k.mp4", _expected(shader.read_text(), 24, (320, 192)))
    runs = json.loads(run_cli("runs", "--json", cwd=tmp_path).stdout)
    stored = [p for p in (tmp_path / "framefarm-data").rglob("sketches/*")]
    assert [p.suffix for p in stored] == [".frag"]  # every job loads it as a shader
    assert runs[0]["status"] == "SUCCEEDED"


def test_a_plain_glsl_program_through_the_job_contract(tmp_path: Path) -> None:
    """`#version` and its own main(), given as `--kind shader` in a .txt; planned, rendered in
    shuffled order and encoded by separate `framefarm job` processes with FRAMEFARM_KIND."""
    program = tmp_path / "gradient.txt"
    program.write_text(PLAIN)
    base = {"FRAMEFARM_STORAGE": (tmp_path / "bucket").as_uri(),
            "FRAMEFARM_JOBLOG": f"sqlite:///{tmp_path}/log.db"}
    plan = run_cli("job", cwd=tmp_path, env={
        **base, "JOB_TYPE": "plan", "FRAMEFARM_SKETCH": str(program), "FRAMEFARM_KIND": "shader",
        "TOTAL_FRAMES": "12", "FRAMES_PER_RENDER_JOB": "4", "FRAMEFARM_WIDTH": "64",
        "FRAMEFARM_HEIGHT": "48", "FRAMEFARM_OUTPUT": str(tmp_path / "gradient.mp4")})
    assert plan.returncode == 0, plan.stderr
    run_id = plan.stdout.strip()
    render_and_encode(base, run_id, (2, 0, 1), cwd=tmp_path)
    _assert_frames(tmp_path / "gradient.mp4", _expected(PLAIN, 12, (64, 48)))
    statuses = {r.job: r.status for r in open_joblog(base["FRAMEFARM_JOBLOG"]).jobs(run_id)}
    assert set(statuses.values()) == {"SUCCEEDED"} and len(statuses) == 5


@pytest.mark.parametrize("source, line", [
    ("void mainImage(out vec4 fragColor, in vec2 fragCoord)\n{\n    fragColor = vec4(nope, 1.0);\n}\n",
     "line 3: error: `nope' undeclared"),
    ("#version 330\nout vec4 c;\nvoid main() {\n  c = vec4(1.0)\n}\n",
     "line 5: error: syntax error"),
])
def test_a_shader_that_does_not_compile_is_one_line_naming_its_line(tmp_path: Path, source: str,
                                                                     line: str) -> None:
    shader = tmp_path / "broken.frag"
    shader.write_text(source)
    done = run_cli("render", str(shader), "-o", str(tmp_path / "b.mp4"), "--frames", "4",
                   "--size", "64x48", cwd=tmp_path)
    assert done.returncode == 2
    [said] = done.stderr.strip().splitlines()
    assert said.startswith(f"framefarm: shader broken.frag does not compile: {line}"), said
    assert not (tmp_path / "b.mp4").exists()


def test_what_is_no_shader_is_named(tmp_path: Path) -> None:
    notes = tmp_path / "notes.frag"
    notes.write_text("these are notes\n")
    done = run_cli("render", str(notes), "-o", str(tmp_path / "n.mp4"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "framefarm: shader notes.frag has neither mainImage(out vec4, in vec2) (Shadertoy) nor a "
        "#version line and void main(): paste a Shadertoy shader or a GLSL fragment program")
    odd = tmp_path / "scene.xyz"
    odd.write_text(PLAIN)
    done = run_cli("render", str(odd), "-o", str(tmp_path / "n.mp4"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().startswith(f"framefarm: sketch {odd} is not a .py file: give a "
                                          "Python file with render(ctx), a GLSL shader")


TEXTURED = """// framefarm: iChannel0 = textures/stripes.png
void mainImage(out vec4 fragColor, in vec2 fragCoord)
{
    vec2 uv = fragCoord / iResolution.xy;
    uv.x += iTime * 0.25;  // the texture scrolls (it repeats)
    fragColor = vec4(texture(iChannel0, uv).rgb, 1.0);
}
"""


def test_a_channel_texture_travels_with_the_shader(tmp_path: Path) -> None:
    """`// framefarm: iChannel0 = …` names an image beside the shader: it is an asset, stored in
    the shader's bundle, and every worker samples it."""
    from PIL import Image

    project = tmp_path / "project"
    (project / "textures").mkdir(parents=True)
    x = np.arange(64)
    wave = 127 + 120 * np.sin(x / 64 * 2 * np.pi)  # soft bands: what x264 keeps at this size
    stripes = np.stack([wave, 64 + x * 2, 255 - wave], axis=-1).astype(np.uint8)
    Image.fromarray(np.broadcast_to(stripes, (64, 64, 3)).copy()).save(
        project / "textures" / "stripes.png")
    shader = project / "scroll.frag"
    shader.write_text(TEXTURED)
    done = run_cli("render", str(shader), "-o", str(tmp_path / "s.mp4"), "--frames", "16",
                   "--size", "128x64", "--per-job", "4", "--workers", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    gl = ShaderFrames(TEXTURED, label="t", width=128, height=64, folder=project)
    expected = [gl.draw(i, 30.0).copy() for i in range(16)]
    assert expected[0].std() > 20  # the texture is there, not a black channel
    _assert_frames(tmp_path / "s.mp4", expected)
    [bundle] = (tmp_path / "framefarm-data" / "bundles").iterdir()
    assert (bundle / "textures" / "stripes.png").is_file()
    (project / "textures" / "stripes.png").unlink()
    done = run_cli("render", str(shader), "-o", str(tmp_path / "t.mp4"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().startswith(
        "framefarm: asset textures/stripes.png of sketch scroll.frag not found")
