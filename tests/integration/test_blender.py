"""Blender scenes (framefarm/kinds/blender.py) end to end: a scene built by examples/blender_scene.py
renders with its own settings through the local runner and through the job contract (`framefarm
job` processes, as AWS Batch runs them), every frame compared with Blender's own animation
render of the same scene; a frame renders the same in any process; bad scenes are one line and
exit 2.

The tests marked `blender` need bpy (the `blender` extra, in an environment of its own: bpy
5.0.1 needs NumPy 1.x), which .ci/run's second step installs; the default environment runs the
one test that a .blend without bpy is one line naming the fix.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from framefarm.joblog import open_joblog
from framefarm.video import read_frames
from tests.conftest import EXAMPLES, psnr, render_and_encode, run_cli

pytestmark = [pytest.mark.integration]

HAS_BPY = importlib.util.find_spec("bpy") is not None
needs_bpy = pytest.mark.skipif(not HAS_BPY, reason="bpy is not installed here: .ci/run's second "
                               "step runs these in .venv-blender (pip install -e '.[dev,blender]')")


def _bpy(script: str, *args: str, timeout: float = 300) -> str:
    """Run a bpy script in a fresh Python of this environment; its standard output."""
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _scene(path: Path, *extra: str) -> Path:
    _bpy(f"import runpy, sys; sys.argv = ['blender_scene.py', *sys.argv[1:]]; "
         f"runpy.run_path({str(EXAMPLES / 'blender_scene.py')!r}, run_name='__main__')",
         str(path), *extra)
    return path


BLENDERS_OWN = """
import sys, bpy
from pathlib import Path
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
scene = bpy.context.scene
scene.render.filepath = str(Path(sys.argv[2]) / "f_####")
scene.render.image_settings.file_format = "PNG"
if scene.render.engine == "CYCLES":
    scene.cycles.use_animated_seed = True
bpy.ops.render.render(animation=True)
"""


def _blenders_own(scene: Path, out: Path) -> list[np.ndarray]:
    """The scene's frames as Blender's own animation render writes them (PNGs)."""
    from PIL import Image

    out.mkdir()
    _bpy(BLENDERS_OWN, str(scene), str(out))
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted(out.glob("f_*.png"))]


def _assert_frames(video: Path, expected: list[np.ndarray]) -> None:
    frames = list(read_frames(video))
    assert len(frames) == len(expected)
    for i, (got, want) in enumerate(zip(frames, expected, strict=True)):
        assert psnr(got, want) >= 35, f"frame {i}: {psnr(got, want):.1f} dB"
        other = expected[(i + len(expected) // 2) % len(expected)]
        assert psnr(got, want) > psnr(got, other) + 3, f"frame {i}"  # its own, not another's


@pytest.mark.blender
@needs_bpy
@pytest.mark.parametrize("engine", ["CYCLES", "BLENDER_WORKBENCH"])
def test_a_scene_renders_with_its_own_settings_in_worker_processes(tmp_path: Path,
                                                                   engine: str) -> None:
    """No size, fps or frame flags: the scene's own (160x90, 25 fps, 8 frames) in 4 chunks on 2
    workers, each frame Blender's own for that scene frame."""
    scene = _scene(tmp_path / "scene.blend", "--engine", engine, "--size", "160x90",
                   "--frames", "8", "--fps", "25", "--samples", "16")
    done = run_cli("render", str(scene), "-o", str(tmp_path / "s.mp4"), "--per-job", "2",
                   "--workers", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "8 frames in" in done.stdout
    assert "Fra:" not in done.stdout + done.stderr  # Blender's progress lines stay off
    import av

    with av.open(str(tmp_path / "s.mp4")) as video:
        stream = video.streams.video[0]
        assert (stream.width, stream.height, stream.average_rate) == (160, 90, 25)
    _assert_frames(tmp_path / "s.mp4", _blenders_own(scene, tmp_path / "own"))
    stored = list((tmp_path / "framefarm-data").rglob("sketches/*"))
    assert [p.suffix for p in stored] == [".blend"]  # every job opens it as a scene
    [run] = json.loads(run_cli("runs", "--json", cwd=tmp_path).stdout)
    report = json.loads(run_cli("status", run["run_id"], "--json", cwd=tmp_path).stdout)
    assert report["status"] == "SUCCEEDED" and report["frames_done"] == 8


@pytest.mark.blender
@needs_bpy
def test_a_scene_through_the_job_contract(tmp_path: Path) -> None:
    """Planned, rendered out of order by `framefarm job` processes given 2 CPUs each (Cycles
    threads, no drawing processes) and encoded; a frame step of 2 takes every other frame."""
    scene = _scene(tmp_path / "stepped.blend", "--size", "128x72", "--frames", "12",
                   "--samples", "8")
    _bpy("import sys, bpy; bpy.ops.wm.open_mainfile(filepath=sys.argv[1]); "
         "bpy.context.scene.frame_step = 2; bpy.ops.wm.save_mainfile()", str(scene))
    base = {"FRAMEFARM_STORAGE": (tmp_path / "bucket").as_uri(),
            "FRAMEFARM_JOBLOG": f"sqlite:///{tmp_path}/log.db", "FRAMEFARM_JOB_CPUS": "2"}
    plan = run_cli("job", cwd=tmp_path, env={
        **base, "JOB_TYPE": "plan", "FRAMEFARM_SKETCH": str(scene), "FRAMES_PER_RENDER_JOB": "2",
        "FRAMEFARM_OUTPUT": str(tmp_path / "stepped.mp4")})
    assert plan.returncode == 0, plan.stderr
    run_id = plan.stdout.strip()
    render_and_encode(base, run_id, (2, 0, 1), cwd=tmp_path)
    own = _blenders_own(scene, tmp_path / "own")  # frames 1, 3, ... 11: Blender steps too
    assert len(own) == 6
    _assert_frames(tmp_path / "stepped.mp4", own)
    statuses = {r.job: r.status for r in open_joblog(base["FRAMEFARM_JOBLOG"]).jobs(run_id)}
    assert set(statuses.values()) == {"SUCCEEDED"} and len(statuses) == 5


TEXTURED = """
import sys, bpy
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
scene = bpy.context.scene
image = bpy.data.images.load(sys.argv[2])
image.filepath = "//textures/checker.png"  # relative to the .blend, as artists keep them
material = bpy.data.materials["cube"]
nodes, links = material.node_tree.nodes, material.node_tree.links
texture = nodes.new("ShaderNodeTexImage")
texture.image = image
links.new(texture.outputs["Color"], nodes["Principled BSDF"].inputs["Base Color"])
scene.display.shading.color_type = "TEXTURE"
bpy.ops.wm.save_mainfile()
"""


@pytest.mark.blender
@needs_bpy
def test_a_scene_brings_its_textures_to_jobs_that_never_saw_its_folder(tmp_path: Path) -> None:
    """A texture the scene links by a relative path (//textures/checker.png) is an asset
    (FRAMEFARM_ASSETS, as --asset gives it): the plan job stores it with the scene, the user's
    folder goes, and render jobs elsewhere draw the texture; without the asset they could not."""
    from PIL import Image

    project = tmp_path / "project"
    (project / "textures").mkdir(parents=True)
    checker = (np.indices((64, 64)) // 32).sum(axis=0) % 2 * 200 + 30  # 2x2 grey checks
    Image.fromarray(checker.astype(np.uint8)).convert("RGB").save(
        project / "textures" / "checker.png")
    scene = _scene(project / "textured.blend", "--engine", "BLENDER_WORKBENCH", "--size",
                   "128x72", "--frames", "6")
    _bpy(TEXTURED, str(scene), str(project / "textures" / "checker.png"))
    own = _blenders_own(scene, tmp_path / "own")
    plain = _blenders_own(_scene(tmp_path / "plain.blend", "--engine", "BLENDER_WORKBENCH",
                                 "--size", "128x72", "--frames", "6"), tmp_path / "plain")
    assert psnr(own[0], plain[0]) < 30  # the texture shows
    base = {"FRAMEFARM_STORAGE": (tmp_path / "bucket").as_uri(),
            "FRAMEFARM_JOBLOG": f"sqlite:///{tmp_path}/log.db"}
    plan = run_cli("job", cwd=tmp_path, env={
        **base, "JOB_TYPE": "plan", "FRAMEFARM_SKETCH": str(scene),
        "FRAMEFARM_ASSETS": "textures/", "FRAMES_PER_RENDER_JOB": "3",
        "FRAMEFARM_OUTPUT": str(tmp_path / "out.mp4")})
    assert plan.returncode == 0, plan.stderr
    shutil.rmtree(project)  # the artist's folder is not on the render nodes
    node = tmp_path / "node"
    node.mkdir()
    render_and_encode(base, plan.stdout.strip(), (1, 0), cwd=node)
    _assert_frames(tmp_path / "out.mp4", own)


ONE_FRAME = """
import sys
import numpy as np
from pathlib import Path
from framefarm.sketch import FrameSource, load_sketch
sketch = load_sketch(sys.argv[1])
source = FrameSource(sketch, width=96, height=54, fps=24, total_frames=8)
frames = [int(f) for f in sys.argv[3].split(",")]
for frame in frames:
    pixels = source.frame(frame)
np.save(sys.argv[2], pixels)
"""


@pytest.mark.blender
@needs_bpy
def test_a_frame_renders_the_same_in_any_process(tmp_path: Path) -> None:
    """Frame 5 drawn in a process that drew frames 0-4 first and in one that drew only it are
    the same pixels (each frame its own seed), and differ from frame 4's noise."""
    scene = _scene(tmp_path / "noisy.blend", "--size", "96x54", "--frames", "8", "--samples", "4")
    _bpy(ONE_FRAME, str(scene), str(tmp_path / "after.npy"), "0,1,2,3,4,5")
    _bpy(ONE_FRAME, str(scene), str(tmp_path / "alone.npy"), "5")
    _bpy(ONE_FRAME, str(scene), str(tmp_path / "four.npy"), "4")
    after, alone = np.load(tmp_path / "after.npy"), np.load(tmp_path / "alone.npy")
    assert after.shape == (54, 96, 3)
    assert np.array_equal(after, alone)
    assert not np.array_equal(alone, np.load(tmp_path / "four.npy"))


@pytest.mark.blender
@needs_bpy
def test_bad_scenes_are_one_line_and_exit_2(tmp_path: Path) -> None:
    """A scene without a camera, and a file that is no .blend: one line naming it and the fix,
    exit 2, no video, nothing rendered."""
    scene = _scene(tmp_path / "nocam.blend", "--size", "64x36", "--frames", "2")
    _bpy("import sys, bpy; bpy.ops.wm.open_mainfile(filepath=sys.argv[1]); "
         "bpy.data.objects.remove(bpy.data.objects['camera']); bpy.ops.wm.save_mainfile()",
         str(scene))
    done = run_cli("render", str(scene), "-o", str(tmp_path / "n.mp4"), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == ("framefarm: Blender scene nocam.blend has no camera: add one "
                                   "and make it the scene's camera (Scene properties > Camera)")
    notes = tmp_path / "notes.blend"
    notes.write_text("not a scene\n")
    done = run_cli("render", str(notes), "-o", str(tmp_path / "n.mp4"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == ("framefarm: Blender scene notes.blend is not a .blend file: "
                                   "save the scene from Blender (File > Save) and give that file")
    assert not (tmp_path / "n.mp4").exists()
    assert not list(tmp_path.rglob("segments"))


@pytest.mark.skipif(HAS_BPY, reason="bpy is installed here: this is the check for where it is not")
def test_a_scene_without_bpy_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    scene = tmp_path / "scene.blend"
    scene.write_bytes(b"BLENDER-v500" + bytes(64))
    done = run_cli("render", str(scene), "-o", str(tmp_path / "s.mp4"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "framefarm: Blender scene scene.blend needs bpy: pip install 'framefarm[blender]' in an "
        "environment of its own (bpy 5.0.1 needs NumPy 1.x; see the README)")


def test_the_blender_image_is_its_own_non_root_target_with_the_numpy_pin() -> None:
    """deploy/Dockerfile's `blender` target runs `framefarm job` as a non-root user, with the
    blender extra installed from its own wheels (bpy's NumPy 1.x), not over the base image's."""
    from tests.containers import DOCKERFILE, image_stages

    stage = image_stages()["blender"]
    assert stage.entrypoint == ["framefarm", "job"]
    uid, _, gid = stage.user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit()
    text = DOCKERFILE.read_text()
    blender_part = text[text.index("AS blender-wheels"):]
    assert '".[aws,otel,blender]"' in blender_part and "from=blender-wheels" in blender_part
    assert "FROM base AS blender" not in text  # NumPy 2 of the base image would stay


@pytest.mark.blender
@needs_bpy
def test_the_blender_images_entrypoint_renders_a_scene_as_batch_would(tmp_path: Path) -> None:
    """Every job of a Blender run in the `blender` image's entrypoint, JOB_TYPE set by the job
    definition as on AWS Batch."""
    from tests.containers import image_stages, run_as_image

    stage = image_stages()["blender"]
    scene = _scene(tmp_path / "scene.blend", "--engine", "BLENDER_WORKBENCH", "--size", "96x54",
                   "--frames", "6")
    common = {"FRAMEFARM_STORAGE": (tmp_path / "bucket").as_uri(),
              "FRAMEFARM_JOBLOG": f"sqlite:///{tmp_path}/log.db"}
    plan = run_as_image(stage, {**common, "JOB_TYPE": "plan", "FRAMEFARM_SKETCH": str(scene),
                                "FRAMES_PER_RENDER_JOB": "3",
                                "FRAMEFARM_OUTPUT": str(tmp_path / "out.mp4")}, tmp_path)
    assert plan.returncode == 0, plan.stderr
    run_id = plan.stdout.strip()
    for index in (1, 0):
        render = run_as_image(stage, {**common, "JOB_TYPE": "render", "FRAMEFARM_RUN_ID": run_id,
                                      "AWS_BATCH_JOB_ARRAY_INDEX": str(index)}, tmp_path)
        assert render.returncode == 0, render.stderr
    encode = run_as_image(stage, {**common, "JOB_TYPE": "encode", "FRAMEFARM_RUN_ID": run_id},
                          tmp_path)
    assert encode.returncode == 0, encode.stderr
    _assert_frames(tmp_path / "out.mp4", _blenders_own(scene, tmp_path / "own"))
