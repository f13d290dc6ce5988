"""Resume and cancel on AWS Batch, against the moto server with Batch played by
tests/batch_player.py (real `framefarm job` processes as containers): `framefarm resume`
submits exactly the chunks without a verified segment (an array over FRAMEFARM_CHUNKS, a plain
job for one, only the encode job for none), `framefarm cancel` and Ctrl-C on `--wait`
terminate the run's jobs on Batch and leave nothing RUNNING in the job log, and every video is
checked frame by frame against its sketch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest

from framefarm.joblog import open_joblog
from framefarm.runners.batch import BatchTargets, submit_downstream
from framefarm.sketch import FrameSource, load_sketch
from framefarm.storage import open_storage
from framefarm.video import read_frames
from tests.batch_player import BatchPlayer, env_of
from tests.conftest import framefarm_command, psnr, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:Tried to parse AWS.+BucketPolicy")]

FRAMES, PER_JOB, SIZE = 12, 3, (64, 48)
CANCELLED = "cancelled by `framefarm cancel`"

SKETCH = """\
import pathlib, time
import numpy as np

FAIL = pathlib.Path({fail!r})   # while it exists, frames 4 and 10 raise (chunks 1 and 3)
HOLD = pathlib.Path({hold!r})   # while it exists, frame 4 waits (chunk 1 keeps running)

def render(ctx):
    if ctx.frame in (4, 10) and FAIL.exists():
        raise RuntimeError("the marker file is there")
    began = time.monotonic()
    while ctx.frame == 4 and HOLD.exists() and time.monotonic() - began < 120:
        time.sleep(0.05)
    y, x = np.mgrid[0:ctx.height, 0:ctx.width]
    red = x * 3 + ctx.frame * 5  # smooth ramps that move with the frame, never wrapping
    green = y * 4 + ctx.frame * 5
    blue = np.full_like(x, ctx.frame * 20)
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)
"""


@pytest.fixture
def sketch(tmp_path: Path) -> Path:
    path = tmp_path / "marked.py"
    path.write_text(SKETCH.format(fail=str(tmp_path / "fail-marker"),
                                  hold=str(tmp_path / "hold-marker")))
    return path


def _render(stack: dict[str, str], player: BatchPlayer, sketch: Path, run_id: str,
            *extra: str) -> subprocess.CompletedProcess[str]:
    done = run_cli("render", str(sketch), "-o", str(sketch.parent / f"{run_id}.mp4"),
                   "--runner", "batch", "--stack", stack["StackName"], "--frames", str(FRAMES),
                   "--size", f"{SIZE[0]}x{SIZE[1]}", "--per-job", str(PER_JOB), "--run-id", run_id,
                   *extra, cwd=sketch.parent, env=dict(player.machine))
    assert done.returncode == 0, done.stderr
    return done


def _follow(stack: dict[str, str], player: BatchPlayer, sketch: Path,
            run_id: str) -> subprocess.Popen[str]:
    """`framefarm render … --runner batch --wait`, started."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRAMEFARM_", "AWS_BATCH_"))}
    return subprocess.Popen(
        [*framefarm_command(), "render", str(sketch), "-o", str(sketch.parent / f"{run_id}.mp4"),
         "--runner", "batch", "--stack", stack["StackName"], "--wait", "--frames", str(FRAMES),
         "--size", f"{SIZE[0]}x{SIZE[1]}", "--per-job", str(PER_JOB), "--run-id", run_id],
        cwd=sketch.parent, env={**env, **player.machine}, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)


def _backends(stack: dict[str, str]) -> list[str]:
    return ["--storage", stack["StorageUrl"], "--joblog", stack["JobLogUrl"]]


def _status(stack: dict[str, str], run_id: str, cwd: Path) -> dict[str, Any]:
    done = run_cli("status", run_id, "--json", "--joblog", stack["JobLogUrl"], cwd=cwd)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _attempts(report: dict[str, Any]) -> dict[str, list[str]]:
    """Job name -> the status of each of its attempts, in order."""
    found: dict[str, list[str]] = {}
    for job in report["jobs"]:
        found.setdefault(job["job"], []).append(job["status"])
    return found


def _described(job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = boto3.client("batch").describe_jobs(jobs=[job_id])["jobs"][0]
    return job


def _new_jobs(player: BatchPlayer, before: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The jobs submitted since `before`, by JOB_TYPE (render ones as a list)."""
    known = {j["jobId"] for j in before}
    jobs = [j for j in player.submitted() if j["jobId"] not in known]
    return {"render": [j for j in jobs if env_of(j)["JOB_TYPE"] == "render"],
            "encode": [j for j in jobs if env_of(j)["JOB_TYPE"] == "encode"],
            "plan": [j for j in jobs if env_of(j)["JOB_TYPE"] == "plan"]}


def _resume(stack: dict[str, str], player: BatchPlayer, run_id: str,
            cwd: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """`framefarm resume RUN` (following the run) while Batch is played; how it ended, and the
    jobs it submitted."""
    before = player.submitted()
    with player.in_background():
        done = run_cli("resume", run_id, *_backends(stack), cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done, _new_jobs(player, before)


def _until(check: Callable[[], Any], *, timeout: float = 90, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}")


def _assert_video(stack: dict[str, str], run_id: str, sketch: Path, tmp_path: Path) -> None:
    """The run's video in S3 is the sketch, frame by frame."""
    video = open_storage(stack["StorageUrl"]).get_file(f"runs/{run_id}/output.mp4",
                                                       tmp_path / f"{run_id}-check.mp4")
    frames = list(read_frames(video))
    assert len(frames) == FRAMES
    source = FrameSource(load_sketch(str(sketch)), width=SIZE[0], height=SIZE[1], fps="30",
                         total_frames=FRAMES)
    for i, frame in enumerate(frames):
        assert psnr(frame, source.frame(i)[..., :3]) >= 35, f"frame {i}"


def _running(stack: dict[str, str], run_id: str, job: str) -> bool:
    return any(r.job == job and r.status == "RUNNING"
               for r in open_joblog(stack["JobLogUrl"]).latest_jobs(run_id))


def test_resume_submits_exactly_the_failed_chunks(stack: dict[str, str], player: BatchPlayer,
                                                 sketch: Path, tmp_path: Path) -> None:
    """Chunks 1 and 3 fail for good (a sketch error is not retried); once the cause is gone,
    `framefarm resume` submits an array of two children over FRAMEFARM_CHUNKS=1,3 and an
    encode job that depends on it, and follows the run to its end."""
    (tmp_path / "fail-marker").touch()
    _render(stack, player, sketch, "failing")
    player.run_until_idle(stop_on_failure=False)
    report = _status(stack, "failing", tmp_path)
    assert report["status"] == "FAILED"
    assert report["runner"] == "batch"
    first = {j["job"]: j for j in report["jobs"]}
    assert "failed on frame 4: RuntimeError: the marker file is there" in first["render:1"]["error"]
    # Batch shows what it did: the failed children, the array, and the encode that never ran
    render_id = first["render:0"]["runner_id"].partition(":")[0]
    encode_id = first["encode"]["runner_id"]
    assert [_described(f"{render_id}:{i}")["status"] for i in range(4)] == [
        "SUCCEEDED", "FAILED", "SUCCEEDED", "FAILED"]
    assert _described(render_id)["status"] == "FAILED"
    assert _described(encode_id)["status"] == "FAILED"

    (tmp_path / "fail-marker").unlink()
    done, new = _resume(stack, player, "failing", tmp_path)
    assert "resuming run failing: 2 of 4 chunks to render" in done.stderr
    [render] = new["render"]
    [encode] = new["encode"]
    assert render["arrayProperties"]["size"] == 2
    assert env_of(render)["FRAMEFARM_CHUNKS"] == "1,3"
    assert [d["jobId"] for d in encode["dependsOn"]] == [render["jobId"]]
    assert "FRAMEFARM_OUTPUT" not in env_of(encode)  # the video stays the run's own output.mp4
    assert not new["plan"]
    resumed = [(p.env["AWS_BATCH_JOB_ARRAY_INDEX"], p.env["FRAMEFARM_CHUNKS"]) for p in
               player.played if p.job_id.startswith(render["jobId"])]
    assert resumed == [("0", "1,3"), ("1", "1,3")]

    _assert_video(stack, "failing", sketch, tmp_path)
    report = _status(stack, "failing", tmp_path)
    assert report["status"] == "SUCCEEDED"
    attempts = _attempts(report)
    assert attempts["render:0"] == attempts["render:2"] == ["SUCCEEDED"]
    assert attempts["render:1"] == attempts["render:3"] == ["FAILED", "SUCCEEDED"]
    assert attempts["encode"] == ["SUCCEEDED"]  # the first never started: its record taken over
    latest = {j["job"]: j for j in report["jobs"]}
    assert [latest[f"render:{i}"]["runner_id"] for i in (1, 3)] == [
        f"{render['jobId']}:0", f"{render['jobId']}:1"]
    assert latest["encode"]["runner_id"] == encode["jobId"]


def test_resume_of_one_missing_segment_submits_a_plain_job(
        stack: dict[str, str], player: BatchPlayer, sketch: Path, tmp_path: Path) -> None:
    """A finished run whose segment 2 is gone from S3: resume renders chunk 2 in a plain job
    (arrays have 2 or more children), FRAMEFARM_CHUNKS=2 and no index, then encodes again."""
    _render(stack, player, sketch, "lost-segment")
    player.run_until_idle()
    assert _status(stack, "lost-segment", tmp_path)["status"] == "SUCCEEDED"
    open_storage(stack["StorageUrl"]).delete("runs/lost-segment/segments/00002.mp4")

    _, new = _resume(stack, player, "lost-segment", tmp_path)
    [render] = new["render"]
    assert not render.get("arrayProperties")
    assert env_of(render)["FRAMEFARM_CHUNKS"] == "2"
    [played] = [p for p in player.played if p.job_id == render["jobId"]]
    assert "AWS_BATCH_JOB_ARRAY_INDEX" not in played.env
    assert [d["jobId"] for d in new["encode"][0]["dependsOn"]] == [render["jobId"]]

    _assert_video(stack, "lost-segment", sketch, tmp_path)
    attempts = _attempts(_status(stack, "lost-segment", tmp_path))
    assert attempts["render:2"] == ["SUCCEEDED", "SUCCEEDED"]
    assert attempts["render:1"] == ["SUCCEEDED"]
    assert attempts["encode"] == ["SUCCEEDED", "SUCCEEDED"]


def test_cancel_terminates_the_jobs_and_resume_finishes_the_run(
        stack: dict[str, str], player: BatchPlayer, sketch: Path, tmp_path: Path) -> None:
    """`framefarm cancel` while chunk 1 renders: TerminateJob stops its container, the array's
    other children and the encode job never start, Batch shows them FAILED with the reason, the
    job log keeps nothing RUNNING; `resume` then renders chunks 1 to 3 and the video is whole."""
    hold = tmp_path / "hold-marker"
    hold.touch()
    follower = _follow(stack, player, sketch, "cancelled")
    with player.in_background():
        _until(lambda: _running(stack, "cancelled", "render:1"), what="chunk 1 to run")
        # one driver at a time: Batch still runs the run's jobs
        done = run_cli("resume", "cancelled", *_backends(stack), cwd=tmp_path)
        assert done.returncode == 2
        assert "run cancelled still has jobs on AWS Batch (render job" in done.stderr
        assert "`framefarm cancel cancelled`" in done.stderr

        done = run_cli("cancel", "cancelled", "--joblog", stack["JobLogUrl"], cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "CANCELLED (terminated on AWS Batch: render job" in done.stdout
        assert "(1 running), the encode job)" in done.stdout
        # the `--wait` that followed the run from another shell sees it and stops
        _, stderr = follower.communicate(timeout=60)
        assert follower.returncode == 130, stderr
        assert "run cancelled CANCELLED; its finished chunks are kept" in stderr
        report = _status(stack, "cancelled", tmp_path)
        ids = {j["job"]: j["runner_id"] for j in report["jobs"]}
        render_id = ids["render:0"].partition(":")[0]
        _until(lambda: _described(ids["encode"])["status"] == "FAILED", what="encode FAILED")
        _until(lambda: _described(render_id)["status"] == "FAILED", what="render FAILED")
    terminated = [p for p in player.played if p.terminated]
    assert [(p.job_id, p.terminated) for p in terminated] == [(f"{render_id}:1", CANCELLED)]
    assert terminated[0].done.returncode == -signal.SIGTERM
    assert [p.job_id for p in player.played if p.stage == "render"] == [
        f"{render_id}:0", f"{render_id}:1"]  # children 2 and 3 never started
    for job_id in (render_id, f"{render_id}:1", f"{render_id}:2", f"{render_id}:3", ids["encode"]):
        job = _described(job_id)
        assert (job["status"], job["statusReason"]) == ("FAILED", CANCELLED), job_id
    assert _described(f"{render_id}:0")["status"] == "SUCCEEDED"

    report = _status(stack, "cancelled", tmp_path)
    assert report["status"] == "CANCELLED" and report["cancelled_at"]
    assert "RUNNING" not in {j["status"] for j in report["jobs"]}
    attempts = _attempts(report)
    assert attempts["render:1"] == ["CANCELLED"]
    assert attempts["encode"] == ["CANCELLED"]
    assert attempts["render:0"] == ["SUCCEEDED"]

    hold.unlink()
    [render] = _resume(stack, player, "cancelled", tmp_path)[1]["render"]
    assert (render["arrayProperties"]["size"], env_of(render)["FRAMEFARM_CHUNKS"]) == (3, "1,2,3")
    _assert_video(stack, "cancelled", sketch, tmp_path)
    report = _status(stack, "cancelled", tmp_path)
    assert (report["status"], report["cancelled_at"]) == ("SUCCEEDED", "")
    assert _attempts(report)["render:1"] == ["CANCELLED", "SUCCEEDED"]


def test_ctrl_c_on_wait_terminates_the_run_and_resume_no_wait_submits_it(
        stack: dict[str, str], player: BatchPlayer, sketch: Path, tmp_path: Path) -> None:
    """Ctrl-C on `render --runner batch --wait` terminates the run's jobs as cancel does and
    exits 130 naming the resume command; `resume --no-wait` submits and returns, and Batch
    finishes the run."""
    hold = tmp_path / "hold-marker"
    hold.touch()
    process = _follow(stack, player, sketch, "interrupted")
    try:
        with player.in_background():
            _until(lambda: _running(stack, "interrupted", "render:1"), what="chunk 1 to run")
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=60)
            run = open_joblog(stack["JobLogUrl"]).get_run("interrupted")
            _until(lambda: any(p.terminated for p in player.played),
                   what=f"the container to stop (render exited {process.returncode}, stderr "
                        f"{stderr!r}, runner ids {run.runner_ids if run else None})")
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert (f"run interrupted CANCELLED; its finished chunks are kept: `framefarm resume "
            f"interrupted --storage {stack['StorageUrl']} --joblog {stack['JobLogUrl']}`") in stderr
    report = _status(stack, "interrupted", tmp_path)
    assert report["status"] == "CANCELLED"
    assert "RUNNING" not in {j["status"] for j in report["jobs"]}
    assert _attempts(report)["render:1"] == ["CANCELLED"]
    [stopped] = [p for p in player.played if p.terminated]
    assert stopped.terminated.startswith("cancelled: the `--wait` that followed it was stopped")
    assert _described(stopped.job_id)["status"] == "FAILED"

    hold.unlink()
    before = player.submitted()
    done = run_cli("resume", "interrupted", "--no-wait", *_backends(stack), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "run interrupted: submitted to AWS Batch; follow it with `framefarm status" in done.stdout
    assert env_of(_new_jobs(player, before)["render"][0])["FRAMEFARM_CHUNKS"] == "1,2,3"
    player.run_until_idle()
    _assert_video(stack, "interrupted", sketch, tmp_path)
    assert _status(stack, "interrupted", tmp_path)["status"] == "SUCCEEDED"


def test_resume_with_every_segment_verified_submits_only_the_encode(
        stack: dict[str, str], player: BatchPlayer, sketch: Path, tmp_path: Path) -> None:
    """Cancelled once every chunk was rendered (the encode job still waiting for Batch): resume
    submits the encode job alone, with nothing to depend on."""
    player.held = {"encode"}
    _render(stack, player, sketch, "encode-only")
    player.run_until_idle()
    done = run_cli("cancel", "encode-only", "--joblog", stack["JobLogUrl"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "terminated on AWS Batch: the encode job" in done.stdout
    player.held.clear()
    player.run_until_idle()  # Batch fails the terminated encode job without starting it
    assert [p.stage for p in player.played] == ["plan", "render", "render", "render", "render"]
    assert _status(stack, "encode-only", tmp_path)["status"] == "CANCELLED"

    done, new = _resume(stack, player, "encode-only", tmp_path)
    assert "resuming run encode-only: 0 of 4 chunks to render" in done.stderr
    assert not new["render"] and not new["plan"]
    [encode] = new["encode"]
    assert not encode.get("dependsOn")
    _assert_video(stack, "encode-only", sketch, tmp_path)
    assert _attempts(_status(stack, "encode-only", tmp_path))["encode"] == ["CANCELLED",
                                                                            "SUCCEEDED"]


def test_submitting_no_chunks_submits_the_encode_alone(stack: dict[str, str]) -> None:
    targets = BatchTargets(queue=stack["JobQueue"], render_definition=stack["RenderJobDefinition"],
                           encode_definition=stack["EncodeJobDefinition"])
    env = {"FRAMEFARM_STORAGE": stack["StorageUrl"], "FRAMEFARM_JOBLOG": stack["JobLogUrl"],
           "FRAMEFARM_FRAME_TIMEOUT": "30"}
    submitted = submit_downstream(run_id="none", chunks=4, total_frames=12, env=env,
                                  targets=targets, only=())
    assert submitted.renders == ()
    encode = _described(submitted.encode)
    assert not encode.get("dependsOn")
    assert env_of(encode)["FRAMEFARM_FRAME_TIMEOUT"] == "30"  # passed on, as to every job
    assert submitted.settings == {"FRAMEFARM_JOB_QUEUE": stack["JobQueue"],
                                  "FRAMEFARM_RENDER_JOB_DEFINITION": stack["RenderJobDefinition"],
                                  "FRAMEFARM_ENCODE_JOB_DEFINITION": stack["EncodeJobDefinition"],
                                  "FRAMEFARM_FRAME_TIMEOUT": "30"}


def test_jobs_submitted_for_a_cancelled_run_are_terminated_at_once(
        stack: dict[str, str], player: BatchPlayer, tmp_path: Path) -> None:
    """A plan job that submits the downstream jobs as `framefarm cancel` runs terminates them
    itself; one that starts after the cancel submits nothing (`resume` does later)."""
    from framefarm.model import RunRecord
    from framefarm.runners.batch import record_submission

    joblog = open_joblog(stack["JobLogUrl"])
    targets = BatchTargets(queue=stack["JobQueue"], render_definition=stack["RenderJobDefinition"],
                           encode_definition=stack["EncodeJobDefinition"])
    env = {"FRAMEFARM_STORAGE": stack["StorageUrl"], "FRAMEFARM_JOBLOG": stack["JobLogUrl"]}
    joblog.put_run(RunRecord(run_id="raced", plan={"size": 2}, cancelled_at="2026-01-01T00:00:00Z"))
    submitted = submit_downstream(run_id="raced", chunks=2, total_frames=6, env=env,
                                  targets=targets)
    record_submission(joblog, run_id="raced", submitted=submitted)
    for job_id in (submitted.render, submitted.encode):
        assert boto3.client("batch").describe_jobs(jobs=[job_id])["jobs"][0]["statusReason"] == \
            "the run was cancelled as its jobs were submitted"

    joblog.put_run(RunRecord(run_id="late", cancelled_at="2026-01-01T00:00:00Z"))
    before = player.submitted()
    boto3.client("batch").submit_job(
        jobName="late-plan", jobQueue=stack["JobQueue"], jobDefinition=stack["PlanJobDefinition"],
        containerOverrides={"environment": [{"name": "FRAMEFARM_RUN_ID", "value": "late"},
                                            {"name": "TOTAL_FRAMES", "value": "6"},
                                            {"name": "FRAMES_PER_RENDER_JOB", "value": "3"}]})
    [plan] = player.run_until_idle()
    assert plan.ok, plan.done.stderr
    new = _new_jobs(player, before)
    assert len(new["plan"]) == 1 and not new["render"] and not new["encode"]
    run = joblog.get_run("late")
    assert run is not None and run.plan["size"] == 2 and "render" not in run.runner_ids
