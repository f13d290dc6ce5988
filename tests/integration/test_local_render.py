"""A whole video on one machine: plan -> parallel render -> encode, checked frame by frame."""

from __future__ import annotations

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
    stored = open_storage(storage.as_uri())
    assert stored.list("runs/r48/segments/") == [f"runs/r48/segments/{i:05d}.mp4" for i in range(7)]
    assert stored.exists("runs/r48/output.mp4") and stored.exists("runs/r48/plan.json")
    assert any(k.startswith("sketches/") and k.endswith(".py") for k in stored.list("sketches/"))
