"""framefarm on AWS Batch, against a moto server on 127.0.0.1: the stack deployed from
deploy/cloudformation.yaml, jobs submitted as a user (or the seed's quick start) would, and
AWS Batch played by tests/batch_player.py — each container's command run with the environment
Batch would inject, in dependency order. The video must land in S3 and DynamoDB must show every
job SUCCEEDED.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest

from framefarm.joblog import open_joblog
from framefarm.runners.batch import BatchTargets, stack_settings, submit_downstream
from framefarm.sketch import FrameSource, load_sketch
from framefarm.storage import open_storage
from framefarm.video import probe, read_frames
from tests.batch_player import BatchPlayer, env_of, retries
from tests.cfn import load_template
from tests.conftest import EXAMPLES, framefarm_command, psnr, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:Tried to parse AWS.+BucketPolicy")]


def described(job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = boto3.client("batch").describe_jobs(jobs=[job_id])["jobs"][0]
    return job


def test_the_seeds_quick_start(stack: dict[str, str], player: BatchPlayer, tmp_path: Path) -> None:
    """`aws batch submit-job --job-name manualSubmit-plan --job-queue Q --job-definition PLAN
    --container-overrides environment="[{name=TOTAL_FRAMES,value=120},
    {name=FRAMES_PER_RENDER_JOB,value=30}]"`, unchanged: a 4-child render array job and an
    encode job that depends on it; then the whole run, as Batch would run it."""
    batch = boto3.client("batch")
    plan_id = batch.submit_job(
        jobName="manualSubmit-plan", jobQueue=stack["JobQueue"],
        jobDefinition=stack["PlanJobDefinition"],
        containerOverrides={"environment": [{"name": "TOTAL_FRAMES", "value": "120"},
                                            {"name": "FRAMES_PER_RENDER_JOB", "value": "30"}]},
    )["jobId"]

    played = player.run_until_idle()

    assert [(p.stage, p.env.get("AWS_BATCH_JOB_ARRAY_INDEX")) for p in played] == [
        ("plan", None), ("render", "0"), ("render", "1"), ("render", "2"), ("render", "3"),
        ("encode", None)], [p.done.stderr[-2000:] for p in played if not p.ok]
    assert all(p.ok for p in played)
    # What the plan job submitted, read back from Batch.
    render_id, encode_id = (p.job_id.partition(":")[0] for p in (played[1], played[5]))
    render, encode = described(render_id), described(encode_id)
    assert render["arrayProperties"]["size"] == 4
    assert [d["jobId"] for d in encode["dependsOn"]] == [render_id]
    run_id = played[0].done.stdout.strip()
    assert run_id == f"batch-{plan_id}"
    for job, kind in ((render, "render"), (encode, "encode")):
        env = env_of(job)
        assert set(env) - {"AWS_BATCH_JOB_ID"} == {n for n in env if not n.startswith("AWS_BATCH_")}
        assert (env["JOB_TYPE"], env["FRAMEFARM_RUN_ID"]) == (kind, run_id)
        assert env["FRAMEFARM_STORAGE"] == stack["StorageUrl"]
        assert env["FRAMEFARM_JOBLOG"] == stack["JobLogUrl"]

    # The video is in S3 and decodes to every frame.
    storage = open_storage(stack["StorageUrl"])
    video = storage.get_file(f"runs/{run_id}/output.mp4", tmp_path / "video.mp4")
    info = probe(video)
    assert (info.frames, info.width, info.height) == (120, 1280, 720)

    # DynamoDB shows every job SUCCEEDED, with Batch's job ids.
    joblog = open_joblog(stack["JobLogUrl"])
    latest = {r.job: r for r in joblog.latest_jobs(run_id)}
    assert {name: r.status for name, r in latest.items()} == dict.fromkeys(
        ["plan", "render:0", "render:1", "render:2", "render:3", "encode"], "SUCCEEDED")
    assert latest["plan"].runner_id == plan_id
    assert [latest[f"render:{i}"].runner_id for i in range(4)] == [f"{render_id}:{i}" for i in range(4)]
    assert latest["encode"].runner_id == encode_id
    run = joblog.get_run(run_id)
    assert run is not None
    assert dict(run.runner_ids) == {"plan": plan_id, "render": render_id, "encode": encode_id}
    # it names its runner and what resume and cancel rebuild it from
    assert run.runner == "batch"
    kept = ("FRAMEFARM_JOB_QUEUE", "FRAMEFARM_RENDER_JOB_DEFINITION",
            "FRAMEFARM_ENCODE_JOB_DEFINITION", "FRAMEFARM_JOBLOG_TTL_DAYS", "FRAMEFARM_STORAGE")
    assert dict(run.settings) == {name: played[0].env[name] for name in kept}

    # `framefarm status` reads it back, merged with what Batch says.
    status = run_cli("status", run_id, "--json", "--joblog", stack["JobLogUrl"], cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert (report["status"], report["frames_done"], report["chunks"]) == ("SUCCEEDED", 120, 4)


def test_render_wait_follows_the_run_and_downloads_the_video(
        stack: dict[str, str], player: BatchPlayer, tmp_path: Path) -> None:
    """`framefarm render … --runner batch --stack NAME --wait`, while Batch runs the jobs."""
    out = tmp_path / "plasma.mp4"
    user = tmp_path / "user"
    user.mkdir()
    env = dict(player.machine)
    process = subprocess.Popen(
        [*framefarm_command(), "render", str(EXAMPLES / "plasma.py"), "-o", str(out),
         "--runner", "batch", "--stack", stack["StackName"], "--wait", "--frames", "20",
         "--size", "640x360", "--per-job", "6", "--frame-timeout", "45"],
        cwd=user, env={**_clean_env(), **env}, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while process.poll() is None and time.monotonic() < deadline:
            player.run_until_idle()
            time.sleep(0.2)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert [(p.stage, p.env.get("AWS_BATCH_JOB_ARRAY_INDEX")) for p in player.played] == [
        ("plan", None), ("render", "0"), ("render", "1"), ("render", "2"), ("render", "3"),
        ("encode", None)]
    # The plan job loaded the user's file from S3, by content hash.
    sketch_url = player.played[0].env["FRAMEFARM_SKETCH"]
    assert sketch_url.startswith(stack["StorageUrl"] + "/sketches/") and sketch_url.endswith(".py")
    # --frame-timeout reaches every job, and the run's record keeps it for resume
    assert {p.env["FRAMEFARM_FRAME_TIMEOUT"] for p in player.played} == {"45"}
    run = open_joblog(stack["JobLogUrl"]).get_run(player.played[0].env["FRAMEFARM_RUN_ID"])
    assert run is not None and run.runner == "batch"
    assert (run.settings["FRAMEFARM_FRAME_TIMEOUT"], run.settings["FRAMEFARM_PLAN_JOB_DEFINITION"]) \
        == ("45", stack["PlanJobDefinition"])
    assert "-> " + str(out) in stdout
    frames = list(read_frames(out))
    assert len(frames) == 20
    source = FrameSource(load_sketch(str(EXAMPLES / "plasma.py")), width=640, height=360,
                         fps="30", total_frames=20)
    for i in (0, 7, 19):
        assert psnr(frames[i], source.frame(i)[..., :3]) >= 35
    check_ui_shows_batch_run(stack, run.run_id, out.read_bytes())


def check_ui_shows_batch_run(stack: dict[str, str], run_id: str, video: bytes) -> None:
    """`framefarm ui` over the stack's S3 and DynamoDB shows the run with the Batch job ids its
    runner recorded, each linked to the console, and serves its video from S3 in byte ranges."""
    from starlette.testclient import TestClient

    from framefarm.ui.app import Settings, create_app

    recorded = open_joblog(stack["JobLogUrl"]).get_run(run_id)
    assert recorded is not None and {"plan", "render", "encode"} <= set(recorded.runner_ids)
    settings = Settings(storage_url=stack["StorageUrl"], joblog_url=stack["JobLogUrl"],
                        token="t", hosts=frozenset({"testserver"}))
    with TestClient(create_app(settings)) as client:
        report = client.get(f"/api/runs/{run_id}?jobs=0").json()
        assert (report["status"], report["runner"]) == ("SUCCEEDED", "batch")
        shown = {link["text"]: link for link in report["links"]}
        for name, job_id in recorded.runner_ids.items():
            if name in ("plan", "render", "encode"):
                assert shown[job_id]["label"] == f"AWS Batch {name} job"
                assert shown[job_id]["url"].endswith(f"#jobs/detail/{job_id}")
        part = client.get(report["video_url"], headers={"Range": "bytes=0-4095"})
        assert part.status_code == 206 and part.content == video[:4096]


def test_plan_here_submits_render_and_encode(stack: dict[str, str], player: BatchPlayer,
                                             tmp_path: Path) -> None:
    """--plan-here: the plan runs on the user's machine; only render and encode go to Batch."""
    done = run_cli("render", str(EXAMPLES / "circles.py"), "-o", str(tmp_path / "c.mp4"),
                   "--runner", "batch", "--stack", stack["StackName"], "--plan-here",
                   "--frames", "9", "--size", "128x96", "--per-job", "9", "--run-id", "here",
                   cwd=tmp_path, env=dict(player.machine))
    assert done.returncode == 0, done.stderr
    assert "submitted to AWS Batch" in done.stdout
    played = player.run_until_idle()
    # One chunk: a plain render job (Batch arrays have 2 or more children) given index 0.
    assert [(p.stage, p.env.get("AWS_BATCH_JOB_ARRAY_INDEX")) for p in played] == [
        ("render", None), ("encode", None)]
    assert not described(played[0].job_id).get("arrayProperties")
    storage = open_storage(stack["StorageUrl"])
    assert probe(storage.get_file("runs/here/output.mp4", tmp_path / "v.mp4")).frames == 9
    statuses = {r.job: r.status for r in open_joblog(stack["JobLogUrl"]).latest_jobs("here")}
    assert statuses == dict.fromkeys(["plan", "render:0", "encode"], "SUCCEEDED")


def test_retries_follow_the_job_definitions(deploy_stack: Callable[..., dict[str, str]],
                                            aws_env: dict[str, str], tmp_path: Path) -> None:
    """A container that dies (exit 137, as when the host goes away) is retried and the run
    finishes on attempt 2; a sketch error (exit 2) fails at once, without a retry.

    Render jobs of 1 vCPU, so the sketch runs in the container's own process and its exit is
    the container's (with 2 or more, drawing processes run it: tests/integration/test_drawing.py).
    """
    stack = deploy_stack(RenderVcpus="1")
    workdir = tmp_path / "container"
    workdir.mkdir()
    player = BatchPlayer(boto3.client("batch"), stack["JobQueue"], workdir, machine=aws_env)
    mark = tmp_path / "died-once"
    flaky = tmp_path / "flaky.py"
    flaky.write_text(
        "import os, pathlib, numpy as np\n"
        "def render(ctx):\n"
        f"    mark = pathlib.Path({str(mark)!r})\n"
        "    if ctx.frame == 3 and not mark.exists():\n"
        "        mark.touch()\n"
        "        os._exit(137)\n"
        "    return np.full((ctx.height, ctx.width, 3), ctx.frame * 20, np.uint8)\n")
    broken = tmp_path / "broken.py"
    broken.write_text(
        "import numpy as np\n"
        "def render(ctx):\n"
        "    if ctx.frame == 5:\n"
        "        raise ValueError('bad frame')\n"
        "    return np.zeros((ctx.height, ctx.width, 3), np.uint8)\n")
    for sketch in (flaky, broken):
        done = run_cli("render", str(sketch), "-o", str(tmp_path / "f.mp4"), "--runner", "batch",
                       "--stack", stack["StackName"], "--frames", "8", "--size", "64x48",
                       "--per-job", "4", "--run-id", sketch.stem, cwd=tmp_path,
                       env=dict(player.machine))
        assert done.returncode == 0, done.stderr
        player.run_until_idle(stop_on_failure=False)
    by_run: dict[str, list[tuple[str, str, int]]] = {}
    for p in player.played:
        by_run.setdefault(p.env["FRAMEFARM_RUN_ID"], []).append(
            (p.stage, p.env.get("AWS_BATCH_JOB_ARRAY_INDEX", ""), p.done.returncode))
    assert by_run["flaky"] == [("plan", "", 0), ("render", "0", 137), ("render", "0", 0),
                               ("render", "1", 0), ("encode", "", 0)]
    assert by_run["broken"] == [("plan", "", 0), ("render", "0", 0), ("render", "1", 2)]
    joblog = open_joblog(stack["JobLogUrl"])
    flaky_jobs = {(r.job, r.attempt): r.status for r in joblog.jobs("flaky")}
    assert flaky_jobs[("render:0", 2)] == "SUCCEEDED"
    assert flaky_jobs[("render:0", 1)] == "RUNNING"  # the job log never heard of its death …
    status = run_cli("status", "flaky", "--json", "--joblog", stack["JobLogUrl"], cwd=tmp_path)
    assert json.loads(status.stdout)["status"] == "SUCCEEDED"  # … but its last attempt counts
    storage = open_storage(stack["StorageUrl"])
    assert probe(storage.get_file("runs/flaky/output.mp4", tmp_path / "v.mp4")).frames == 8
    latest = {r.job: r for r in joblog.latest_jobs("broken")}
    assert latest["render:1"].status == "FAILED"
    assert "failed on frame 5: ValueError: bad frame" in latest["render:1"].error
    assert latest["render:1"].exit_code == 2  # kept for `--wait`, which exits with it
    assert joblog.get_job("flaky", "render:0", 1).exit_code == 0  # killed: it could not say
    assert latest["encode"].status == "SUBMITTED"  # never started: its dependency failed


def test_retry_rules() -> None:
    strategy = load_template()["Resources"]["RenderJobDefinition"]["Properties"]["RetryStrategy"]
    rules = {"attempts": strategy["Attempts"], "evaluateOnExit": [
        {k[0].lower() + k[1:]: v for k, v in rule.items()} for rule in strategy["EvaluateOnExit"]]}
    assert rules["attempts"] == 3
    assert retries(rules, 137, status_reason="Host EC2 (instance i-0abc) terminated.")
    assert retries(rules, 1)
    assert not retries(rules, 2)
    assert retries(rules, 2, status_reason="Host EC2 (instance i-0abc) terminated.")


def test_one_chunk_is_a_plain_job_and_too_many_are_refused(stack: dict[str, str]) -> None:
    targets = BatchTargets(queue=stack["JobQueue"], render_definition=stack["RenderJobDefinition"],
                           encode_definition=stack["EncodeJobDefinition"])
    env = {"FRAMEFARM_STORAGE": stack["StorageUrl"], "FRAMEFARM_JOBLOG": stack["JobLogUrl"]}
    one = submit_downstream(run_id="one", chunks=1, total_frames=5, env=env, targets=targets)
    render = described(one.render)
    assert not render.get("arrayProperties")
    assert env_of(render)["JOB_TYPE"] == "render"  # and no AWS_BATCH_* name: those are Batch's
    from framefarm.errors import UserError

    with pytest.raises(UserError, match="set FRAMES_PER_RENDER_JOB to 2 or more"):
        submit_downstream(run_id="big", chunks=20_000, total_frames=20_000, env=env,
                          targets=targets)


def test_stack_outputs_configure_the_cli(stack: dict[str, str]) -> None:
    settings = stack_settings(stack["StackName"])
    assert settings == {
        "FRAMEFARM_JOB_QUEUE": stack["JobQueue"],
        "FRAMEFARM_PLAN_JOB_DEFINITION": stack["PlanJobDefinition"],
        "FRAMEFARM_RENDER_JOB_DEFINITION": stack["RenderJobDefinition"],
        "FRAMEFARM_ENCODE_JOB_DEFINITION": stack["EncodeJobDefinition"],
        "FRAMEFARM_STORAGE": stack["StorageUrl"],
        "FRAMEFARM_JOBLOG": stack["JobLogUrl"],
        "FRAMEFARM_STATE_MACHINE": stack["StateMachine"],  # --runner stepfunctions
    }


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("FRAMEFARM_", "JOB_TYPE", "AWS_BATCH_"))}
