"""A whole video made only through `framefarm job` subprocesses and environment variables, with
the render jobs in a shuffled order — as AWS Batch would start them."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from framefarm.joblog import open_joblog
from framefarm.video import probe
from tests.conftest import EXAMPLES, run_cli

pytestmark = pytest.mark.integration


def test_plan_shuffled_renders_encode_as_batch_would(workdir: Path) -> None:
    base = {
        "FRAMEFARM_STORAGE": (workdir / "bucket").as_uri(),
        "FRAMEFARM_JOBLOG": f"sqlite:///{workdir}/log.db",
    }
    plan = run_cli("job", cwd=workdir, env={
        **base, "JOB_TYPE": "plan", "FRAMEFARM_SKETCH": str(EXAMPLES / "circles.py"),
        "TOTAL_FRAMES": "20", "FRAMES_PER_RENDER_JOB": "6", "FRAMEFARM_WIDTH": "128",
        "FRAMEFARM_HEIGHT": "72", "FRAMEFARM_OUTPUT": str(workdir / "out" / "circles.mp4"),
        "AWS_BATCH_JOB_ID": "plan-job-1"})
    assert plan.returncode == 0, plan.stderr
    run_id = plan.stdout.strip()
    assert run_id

    order = [0, 1, 2, 3]
    random.Random(7).shuffle(order)
    for index in order:
        render = run_cli("job", cwd=workdir, env={
            **base, "JOB_TYPE": "render", "FRAMEFARM_RUN_ID": run_id,
            "AWS_BATCH_JOB_ARRAY_INDEX": str(index), "AWS_BATCH_JOB_ID": f"render-job:{index}"})
        assert render.returncode == 0, render.stderr

    encode = run_cli("job", cwd=workdir, env={**base, "JOB_TYPE": "encode",
                                              "FRAMEFARM_RUN_ID": run_id})
    assert encode.returncode == 0, encode.stderr

    info = probe(workdir / "out" / "circles.mp4")
    assert (info.frames, info.width, info.height) == (20, 128, 72)
    jobs = open_joblog(base["FRAMEFARM_JOBLOG"]).jobs(run_id)
    assert {j.job: j.status for j in jobs} == {
        "plan": "SUCCEEDED", "render:0": "SUCCEEDED", "render:1": "SUCCEEDED",
        "render:2": "SUCCEEDED", "render:3": "SUCCEEDED", "encode": "SUCCEEDED"}
    assert {j.job: j.runner_id for j in jobs if j.runner_id} == {
        "plan": "plan-job-1", **{f"render:{i}": f"render-job:{i}" for i in range(4)}}
    # Render jobs started in the shuffled order.
    started = sorted((j for j in jobs if j.kind == "render"), key=lambda j: j.started_at)
    assert [j.index for j in started] == order


def test_rerunning_a_render_job_records_a_second_attempt(workdir: Path) -> None:
    base = {"FRAMEFARM_STORAGE": (workdir / "bucket").as_uri(),
            "FRAMEFARM_JOBLOG": f"sqlite:///{workdir}/log.db"}
    plan = run_cli("job", cwd=workdir, env={
        **base, "JOB_TYPE": "plan", "FRAMEFARM_SKETCH": str(EXAMPLES / "plasma.py"),
        "TOTAL_FRAMES": "4", "FRAMES_PER_RENDER_JOB": "4", "FRAMEFARM_WIDTH": "64",
        "FRAMEFARM_HEIGHT": "32"})
    run_id = plan.stdout.strip()
    for _ in range(2):
        done = run_cli("job", cwd=workdir, env={**base, "JOB_TYPE": "render",
                                                "FRAMEFARM_RUN_ID": run_id,
                                                "AWS_BATCH_JOB_ARRAY_INDEX": "0"})
        assert done.returncode == 0, done.stderr
    renders = [j for j in open_joblog(base["FRAMEFARM_JOBLOG"]).jobs(run_id) if j.kind == "render"]
    assert [(j.attempt, j.status) for j in renders] == [(1, "SUCCEEDED"), (2, "SUCCEEDED")]


@pytest.mark.parametrize("env, message", [
    ({}, "JOB_TYPE is not set"),
    ({"JOB_TYPE": "paint"}, "JOB_TYPE is 'paint'"),
    ({"JOB_TYPE": "render", "AWS_BATCH_JOB_ARRAY_INDEX": "0"}, "FRAMEFARM_RUN_ID is not set"),
    ({"JOB_TYPE": "render", "FRAMEFARM_RUN_ID": "r"}, "run 'r' has no plan"),
    ({"JOB_TYPE": "plan"}, "FRAMEFARM_SKETCH is not set"),
    ({"JOB_TYPE": "plan", "FRAMEFARM_SKETCH": "x.py", "TOTAL_FRAMES": "ten"},
     "TOTAL_FRAMES='ten' is not a whole number"),
    ({"JOB_TYPE": "encode", "FRAMEFARM_RUN_ID": "nope"}, "run 'nope' has no plan"),
    ({"JOB_TYPE": "plan", "FRAMEFARM_SKETCH": "x.py", "FRAMEFARM_SIZE_BUDGET": "lots"},
     "FRAMEFARM_SIZE_BUDGET='lots' is not a percentage: set it to 0 to 100, e.g. 2"),
    # AWS Batch's plan job definition says its array limit; a plan past it stores nothing.
    ({"JOB_TYPE": "plan", "FRAMEFARM_SKETCH": str(EXAMPLES / "plasma.py"),
      "TOTAL_FRAMES": "30", "FRAMES_PER_RENDER_JOB": "2", "FRAMEFARM_MAX_CHUNKS": "10"},
     "15 render jobs is more than the 10 this runner takes in one run: set "
     "FRAMES_PER_RENDER_JOB (--per-job) to 3 or more"),
])
def test_bad_job_environment_is_one_line_and_exit_2(workdir: Path, env: dict[str, str],
                                                    message: str) -> None:
    done = run_cli("job", cwd=workdir, env=env)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not list((workdir / "framefarm-data").glob("runs/*/plan.json"))


def test_a_render_job_without_an_index_renders_a_one_chunk_plan_only(workdir: Path) -> None:
    """A one-chunk plan goes to AWS Batch as a plain job, which has no array index."""
    base = {"FRAMEFARM_STORAGE": (workdir / "s").as_uri(),
            "FRAMEFARM_JOBLOG": f"sqlite:///{workdir}/log.db"}
    runs = {}
    for frames in ("3", "6"):
        plan = run_cli("job", cwd=workdir, env={
            **base, "JOB_TYPE": "plan", "FRAMEFARM_SKETCH": str(EXAMPLES / "plasma.py"),
            "TOTAL_FRAMES": frames, "FRAMES_PER_RENDER_JOB": "3", "FRAMEFARM_WIDTH": "32",
            "FRAMEFARM_HEIGHT": "16"})
        runs[frames] = plan.stdout.strip()
    one = run_cli("job", cwd=workdir, env={**base, "JOB_TYPE": "render",
                                           "FRAMEFARM_RUN_ID": runs["3"]})
    assert one.returncode == 0, one.stderr
    assert [(j.job, j.status) for j in open_joblog(base["FRAMEFARM_JOBLOG"]).jobs(runs["3"])
            if j.kind == "render"] == [("render:0", "SUCCEEDED")]
    two = run_cli("job", cwd=workdir, env={**base, "JOB_TYPE": "render",
                                           "FRAMEFARM_RUN_ID": runs["6"]})
    assert two.returncode == 2
    assert f"AWS_BATCH_JOB_ARRAY_INDEX is not set: run {runs['6']} has 2 chunks" in two.stderr


def _planned(workdir: Path, sketch: Path, frames: int = 12, per_job: int = 4) -> tuple[dict[str, str], str]:
    base = {"FRAMEFARM_STORAGE": (workdir / "bucket").as_uri(),
            "FRAMEFARM_JOBLOG": f"sqlite:///{workdir}/log.db"}
    plan = run_cli("job", cwd=workdir, env={
        **base, "JOB_TYPE": "plan", "FRAMEFARM_SKETCH": str(sketch), "TOTAL_FRAMES": str(frames),
        "FRAMES_PER_RENDER_JOB": str(per_job), "FRAMEFARM_WIDTH": "64", "FRAMEFARM_HEIGHT": "48"})
    assert plan.returncode == 0, plan.stderr
    return base, plan.stdout.strip()


def test_an_index_outside_the_plan_is_one_line(workdir: Path) -> None:
    base, run_id = _planned(workdir, EXAMPLES / "plasma.py")
    for index in ("3", "-1"):
        render = run_cli("job", cwd=workdir, env={**base, "JOB_TYPE": "render",
                                                  "FRAMEFARM_RUN_ID": run_id,
                                                  "AWS_BATCH_JOB_ARRAY_INDEX": index})
        assert render.returncode == 2
        assert "AWS_BATCH_JOB_ARRAY_INDEX" in render.stderr and "Traceback" not in render.stderr


def test_a_resumed_array_renders_the_listed_chunks(workdir: Path) -> None:
    """FRAMEFARM_CHUNKS=2,0: array child 0 renders chunk 2, child 1 chunk 0."""
    base, run_id = _planned(workdir, EXAMPLES / "plasma.py")
    for child in (0, 1):
        render = run_cli("job", cwd=workdir, env={**base, "JOB_TYPE": "render",
                                                  "FRAMEFARM_RUN_ID": run_id,
                                                  "FRAMEFARM_CHUNKS": "2,0",
                                                  "AWS_BATCH_JOB_ARRAY_INDEX": str(child)})
        assert render.returncode == 0, render.stderr
    jobs = open_joblog(base["FRAMEFARM_JOBLOG"]).jobs(run_id)
    assert sorted(j.job for j in jobs if j.kind == "render") == ["render:0", "render:2"]
    beyond = run_cli("job", cwd=workdir, env={**base, "JOB_TYPE": "render", "FRAMEFARM_RUN_ID": run_id,
                                              "FRAMEFARM_CHUNKS": "2,0",
                                              "AWS_BATCH_JOB_ARRAY_INDEX": "2"})
    assert beyond.returncode == 2 and "FRAMEFARM_CHUNKS" in beyond.stderr


def test_a_container_honours_the_frame_timeout(workdir: Path, write_sketch: Callable[..., Path]) -> None:
    """A frame that never returns ends the render job with exit 1 (so AWS Batch retries it),
    recorded FAILED naming the frame."""
    sketch = write_sketch("""
        import time
        import numpy as np
        def render(ctx):
            if ctx.frame == 6:
                time.sleep(3600)
            return np.zeros((ctx.height, ctx.width, 3), np.uint8)
    """)
    base, run_id = _planned(workdir, sketch)
    render = run_cli("job", cwd=workdir, timeout=60, env={
        **base, "JOB_TYPE": "render", "FRAMEFARM_RUN_ID": run_id, "AWS_BATCH_JOB_ARRAY_INDEX": "1",
        "FRAMEFARM_FRAME_TIMEOUT": "1.5"})
    assert render.returncode == 1
    assert "chunk 1 (frames 4-7): frame 6 took longer than the frame timeout of 1.5 s" in render.stderr
    (record,) = [j for j in open_joblog(base["FRAMEFARM_JOBLOG"]).jobs(run_id) if j.job == "render:1"]
    assert record.status == "FAILED" and "frame 6" in record.error


def test_a_plan_finds_storage_it_cannot_write_and_unsafe_run_ids(workdir: Path) -> None:
    """Storage that cannot be written fails the plan job in one line, before any render job;
    a run id unsafe as a file name or S3 key is refused."""
    joblog = f"sqlite:///{workdir}/log.db"
    plan = run_cli("job", cwd=workdir, env={
        "JOB_TYPE": "plan", "FRAMEFARM_SKETCH": str(EXAMPLES / "plasma.py"), "TOTAL_FRAMES": "4",
        "FRAMEFARM_STORAGE": "file:///proc/nope", "FRAMEFARM_JOBLOG": joblog,
        "FRAMEFARM_RUN_ID": "probe"})
    assert plan.returncode == 2, plan.stderr
    assert "/proc/nope" in plan.stderr and "Traceback" not in plan.stderr
    (record,) = open_joblog(joblog).jobs("probe")
    assert record.status == "FAILED" and "/proc/nope" in record.error
    for bad in ("../up", "a b", "x" * 300):
        job = run_cli("job", cwd=workdir, env={"JOB_TYPE": "render", "FRAMEFARM_RUN_ID": bad,
                                               "FRAMEFARM_JOBLOG": joblog})
        assert job.returncode == 2
        assert len(job.stderr.strip().splitlines()) == 1 and "run id" in job.stderr
