"""The job contract, parsed from environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from framefarm.errors import UserError
from framefarm.job import JobEnv


def test_render_contract() -> None:
    env = JobEnv.from_environ({
        "JOB_TYPE": "render", "FRAMEFARM_RUN_ID": "r1", "AWS_BATCH_JOB_ARRAY_INDEX": "3",
        "FRAMEFARM_STORAGE": "file:///data", "FRAMEFARM_JOBLOG": "sqlite:////data/log.db",
        "AWS_BATCH_JOB_ID": "abc:3", "AWS_BATCH_JOB_ATTEMPT": "2"})
    assert (env.job_type, env.run_id, env.index, env.attempt, env.batch_job_id) == (
        "render", "r1", 3, 2, "abc:3")
    assert (env.storage, env.joblog) == ("file:///data", "sqlite:////data/log.db")


def test_plan_contract_with_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = JobEnv.from_environ({"JOB_TYPE": "plan", "FRAMEFARM_SKETCH": "s.py",
                               "TOTAL_FRAMES": "120", "FRAMES_PER_RENDER_JOB": "30",
                               "FRAMEFARM_KEEP_FRAMES": "true", "FRAMEFARM_FPS": "29.97"})
    assert env.plan is not None
    assert (env.plan.total_frames, env.plan.frames_per_job, env.plan.keep_frames, env.plan.fps) == (
        120, 30, True, "29.97")
    assert env.storage.startswith("file:///") and env.storage.endswith("/framefarm-data")
    assert env.joblog.startswith("sqlite:////") and env.joblog.endswith("framefarm-data/joblog.sqlite3")


@pytest.mark.parametrize("environ, message", [
    ({"JOB_TYPE": "plan", "FRAMEFARM_SKETCH": "s.py", "FRAMES_PER_RENDER_JOB": "1.5"},
     "FRAMES_PER_RENDER_JOB='1.5' is not a whole number"),
    ({"JOB_TYPE": "render", "FRAMEFARM_RUN_ID": "r", "AWS_BATCH_JOB_ARRAY_INDEX": "x"},
     "AWS_BATCH_JOB_ARRAY_INDEX='x'"),
    ({"JOB_TYPE": "encode"}, "FRAMEFARM_RUN_ID is not set"),
])
def test_bad_contract(environ: dict[str, str], message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(".", r"\.")):
        JobEnv.from_environ(environ)
