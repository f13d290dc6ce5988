"""A whole video on one machine: plan -> parallel render -> encode, checked frame by frame."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import pytest

from framefarm import config
from framefarm.joblog import open_joblog
from framefarm.runners import RunRequest, open_runner
from framefarm.sketch import FrameSource, load_sketch
from framefarm.storage import open_storage
from framefarm.video import probe, read_frames
from tests.conftest import EXAMPLES, psnr

pytestmark = pytest.mark.integration


def test_48_frames_uneven_chunks_match_the_sketch(workdir: Path) -> None:
    out = workdir / "plasma.mp4"
    storage = workdir / "data"
    joblog_url = f"sqlite:///{workdir}/log.db"
    env = {
        config.SKETCH: str(EXAMPLES / "plasma.py"), config.STORAGE: storage.as_uri(),
        config.JOBLOG: joblog_url, config.OUTPUT: str(out), config.TOTAL_FRAMES: "48",
        config.FRAMES_PER_RENDER_JOB: "7", config.WIDTH: "640", config.HEIGHT: "360",
        config.FPS: "24", config.RUN_ID: "r48",
    }
    result = open_runner("local", workers=2).run(RunRequest(env=env))
    assert result.succeeded, result.failures

    info = probe(out)
    assert (info.frames, info.width, info.height, info.fps) == (48, 640, 360, Fraction(24))
    source = FrameSource(load_sketch(str(EXAMPLES / "plasma.py")), width=640, height=360,
                         fps=Fraction(24), total_frames=48)
    frames = read_frames(out)
    scores = [psnr(frame[:, :, :3], source.frame(i)[:, :, :3]) for i, frame in enumerate(frames)]
    assert min(scores) >= 35, scores
    # Order matters: each frame is closer to its own sketch frame than to its neighbour's.
    assert all(psnr(frames[i], source.frame(i + 1)[:, :, :3]) < scores[i] for i in range(47))

    jobs = open_joblog(joblog_url).jobs("r48")
    assert [(j.job, j.status) for j in jobs] == (
        [("plan", "SUCCEEDED")] + [(f"render:{i}", "SUCCEEDED") for i in range(7)]
        + [("encode", "SUCCEEDED")])
    assert [j.frames for j in jobs if j.kind == "render"] == [7, 7, 7, 7, 7, 7, 6]
    assert all(j.started_at and j.stopped_at >= j.started_at for j in jobs)
    run = open_joblog(joblog_url).get_run("r48")
    assert run is not None and run.output == str(out)
    assert (run.plan["total_frames"], run.plan["frames_per_job"], run.plan["size"]) == (48, 7, 7)
    stored = open_storage(storage.as_uri())
    assert stored.list("runs/r48/segments/") == [f"runs/r48/segments/{i:05d}.mp4" for i in range(7)]
    assert stored.exists("runs/r48/output.mp4") and stored.exists("runs/r48/plan.json")
    assert any(k.startswith("sketches/") and k.endswith(".py") for k in stored.list("sketches/"))


def test_keep_frames_stores_every_frame_as_png(workdir: Path) -> None:
    import numpy as np
    from PIL import Image

    env = {
        config.SKETCH: str(EXAMPLES / "circles.py"), config.STORAGE: (workdir / "d").as_uri(),
        config.JOBLOG: f"sqlite:///{workdir}/log.db", config.OUTPUT: str(workdir / "c.mp4"),
        config.TOTAL_FRAMES: "5", config.FRAMES_PER_RENDER_JOB: "2", config.WIDTH: "64",
        config.HEIGHT: "48", config.RUN_ID: "keep", config.KEEP_FRAMES: "1",
    }
    assert open_runner("local", workers=2).run(RunRequest(env=env)).succeeded
    storage = open_storage(env[config.STORAGE])
    keys = storage.list("runs/keep/frames/")
    assert keys == [f"runs/keep/frames/{i:06d}.png" for i in range(5)]
    source = FrameSource(load_sketch(str(EXAMPLES / "circles.py")), width=64, height=48,
                         fps=Fraction(30), total_frames=5)
    for i, key in enumerate(keys):
        png = np.asarray(Image.open(storage.local_path(key)))
        assert np.array_equal(png, source.frame(i))  # lossless: exactly the sketch's pixels
    assert probe(workdir / "c.mp4").frames == 5


def test_a_one_frame_video_from_the_command_ends_with_everything_written(workdir: Path,
                                                                         tmp_path: Path) -> None:
    """`framefarm render` ends with os._exit once its command has returned (cli.entry): the
    printed line, the job log, the run's trace and multiprocessing's clean-up must all be done
    by then. A 1-frame chunk on two CPUs draws in the job's own process."""
    import json

    from tests.conftest import run_cli

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = run_cli("render", str(EXAMPLES / "plasma.py"), "-o", "one.mp4", "--frames", "1",
                   "--size", "640x360", "--run-id", "one", cwd=workdir,
                   env={"TMPDIR": str(scratch)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("run one: 1 frames in ") and done.stdout.endswith("KB)\n")
    source = FrameSource(load_sketch(str(EXAMPLES / "plasma.py")), width=640, height=360,
                         fps=Fraction(30), total_frames=2)
    frames = read_frames(workdir / "one.mp4")
    assert len(frames) == 1
    # plasma's fine chroma costs a few dB in 4:2:0 at this size; the frame is still its own
    own, next_one = (psnr(frames[0], source.frame(i)[:, :, :3]) for i in (0, 1))
    assert own >= 30 and own > next_one + 3, (own, next_one)
    log = open_joblog(f"sqlite:///{workdir}/framefarm-data/joblog.sqlite3")
    assert [(j.job, j.status) for j in log.jobs("one")] == [
        ("plan", "SUCCEEDED"), ("render:0", "SUCCEEDED"), ("encode", "SUCCEEDED")]
    trace = workdir / "framefarm-data" / "runs" / "one" / "trace.jsonl"
    names = [json.loads(line)["name"] for line in trace.read_text().splitlines()]
    assert {"run", "plan", "render", "frame", "encode"} <= set(names)
    assert os.listdir(scratch) == [], "the driver or its workers left temporary files behind"


@pytest.mark.parametrize("name, budget, chunks", [
    ("circles", "2", 2), ("tracker", "2", 1), ("circles", "", 1)])
def test_a_size_budget_splits_moving_pictures_and_keeps_a_near_static_one_whole(
        workdir: Path, name: str, budget: str, chunks: int) -> None:
    """Given a size budget, the plan encodes two probe frames to see what a key frame costs: on
    circles about 2 predicted frames, so each of 2 workers gets a segment; on tracker (one dot on
    a still grid) ~20, so it stays one segment, drawn by both. Without one (the default) a
    video shorter than x264's key-frame interval is one segment. The video is the sketch's."""
    out = workdir / f"{name}.mp4"
    env = {
        config.SKETCH: str(EXAMPLES / f"{name}.py"), config.STORAGE: (workdir / "d").as_uri(),
        config.JOBLOG: f"sqlite:///{workdir}/log.db", config.OUTPUT: str(out),
        config.TOTAL_FRAMES: "120", config.WIDTH: "640", config.HEIGHT: "360",
        config.RUN_ID: name, config.SIZE_BUDGET: budget,
    }
    assert open_runner("local", workers=2).run(RunRequest(env=env)).succeeded
    renders = [j for j in open_joblog(env[config.JOBLOG]).jobs(name) if j.kind == "render"]
    assert [(j.job, j.frames) for j in renders] == [
        (f"render:{i}", 120 // chunks) for i in range(chunks)]
    source = FrameSource(load_sketch(str(EXAMPLES / f"{name}.py")), width=640, height=360,
                         fps=Fraction(30), total_frames=120)
    frames = read_frames(out)
    assert len(frames) == 120
    for i in (0, 59, 60, 119):  # either side of the cut, were there one
        own = psnr(frames[i], source.frame(i)[:, :, :3])
        assert own >= 30, (i, own)
        if name == "circles":
            assert own > psnr(frames[i], source.frame(i + 1 if i < 119 else i - 1)[:, :, :3])
