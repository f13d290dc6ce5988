"""`--runner stepfunctions` against the moto server: the stack's state machine, made from
deploy/cloudformation.yaml's own definition, is executed by moto's Step Functions interpreter
(the ASL engine it shares with LocalStack), whose `batch:submitJob.sync` tasks submit real
Batch jobs that tests/batch_player.py runs as `framefarm job` processes. Each video is checked
frame by frame against its sketch; the job log and the execution's history are read back.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from framefarm.joblog import open_joblog
from framefarm.sketch import FrameSource, load_sketch
from framefarm.storage import open_storage
from framefarm.video import read_frames
from tests.batch_player import BatchPlayer
from tests.cfn import load_template, resolve
from tests.conftest import psnr, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:Tried to parse AWS.+BucketPolicy")]

FRAMES, PER_JOB, SIZE = 12, 3, (64, 48)

SKETCH = """\
import pathlib, time
import numpy as np

FAIL = pathlib.Path({fail!r})   # while it exists, frame 4 raises (chunk 1)
HOLD = pathlib.Path({hold!r})   # while it exists, frame 4 waits (chunk 1 keeps running)

def render(ctx):
    if ctx.frame == 4 and FAIL.exists():
        raise RuntimeError("the marker file is there")
    began = time.monotonic()
    while ctx.frame == 4 and HOLD.exists() and time.monotonic() - began < 120:
        time.sleep(0.05)
    y, x = np.mgrid[0:ctx.height, 0:ctx.width]
    red = x * 3 + ctx.frame * 5
    green = y * 4 + ctx.frame * 5
    blue = np.full_like(x, ctx.frame * 20)
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)
"""


def _moto_config(url: str, config: dict[str, Any]) -> None:
    request = urllib.request.Request(f"{url}/moto-api/config", method="POST",
                                     data=json.dumps(config).encode(),
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).read()


@pytest.fixture
def held_submissions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Submitted Batch jobs stay SUBMITTED until the player takes them (moto without Docker
    marks them SUCCEEDED at once, which a `.sync` task would take for done)."""
    from moto.batch_simple.models import BatchSimpleBackend

    def hold(self: Any, include_start_attempt: bool, job: Any) -> None:
        del include_start_attempt
        self.backend._jobs[job.job_id] = job

    monkeypatch.setattr(BatchSimpleBackend, "_mark_job_as_finished", hold)


@pytest.fixture
def batch_integration(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's port of the ASL engine leaves out one step of its Batch integration that
    LocalStack's (and AWS) does: turning the state's PascalCase parameters (JobName, ...) into
    the API's request and the API's response back into PascalCase (JobId, ...). Put back, from
    botocore's model of the Batch API."""
    import botocore.session
    from botocore import xform_name
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_batch as module,
    )

    model = botocore.session.get_session().get_service_model("batch")
    operations = {xform_name(name): name for name in model.operation_names}

    def shape(action: str, which: str) -> Any:
        return getattr(model.operation_model(operations[action]), which)

    def parameters(self: Any, parameters: dict[str, Any], boto_service_name: str | None = None,
                   service_action_name: str | None = None) -> None:
        action = self._get_boto_service_action(service_action_name)
        self._to_boto_request(parameters, shape(action, "input_shape"))

    def response(self: Any, response: Any, boto_service_name: str | None = None,
                 service_action_name: str | None = None) -> None:
        action = self._get_boto_service_action(service_action_name)
        self._from_boto_response(response, shape(action, "output_shape"))

    monkeypatch.setattr(module.StateTaskServiceBatch, "_normalise_parameters", parameters)
    monkeypatch.setattr(module.StateTaskServiceBatch, "_normalise_response", response)


@pytest.fixture
def sfn_stack(deploy_stack: Callable[..., dict[str, str]], moto_server: str,
              monkeypatch: pytest.MonkeyPatch, held_submissions: None,
              batch_integration: None) -> Iterator[dict[str, str]]:
    """The stack, with its state machine executable: moto runs executions when its config says
    so, and its interpreter calls Batch and DynamoDB on the server's port (MOTO_PORT). moto's
    CloudFormation keeps the state machine where the interpreter does not look, so it is made
    again there under the same name, from the template's Definition and substitutions."""
    _moto_config(moto_server, {"stepfunctions": {"execute_state_machine": True}})
    monkeypatch.setenv("MOTO_PORT", moto_server.rpartition(":")[2])
    try:
        # Render jobs of 1 vCPU: the sketch runs in the container's own process, so its exit
        # is the container's (as tests/integration/test_batch.py's retry test).
        outputs = deploy_stack(RenderVcpus="1")
        props = load_template()["Resources"]["StateMachine"]["Properties"]
        table = outputs["JobLogUrl"].removeprefix("dynamodb://")
        names = {"JobQueue": outputs["JobQueue"], "JobLogTable": table,
                 **{k: outputs[k] for k in ("PlanJobDefinition", "RenderJobDefinition",
                                            "EncodeJobDefinition")}}
        subs = resolve(props["DefinitionSubstitutions"], names)
        text = json.dumps(props["Definition"])
        for key, value in subs.items():
            text = text.replace("${" + key + "}", value)
        role = boto3.client("iam").list_roles()["Roles"][-1]["Arn"]
        made = boto3.client("stepfunctions").create_state_machine(
            name=outputs["StateMachine"].rpartition(":")[2], definition=text, roleArn=role,
            type="STANDARD", tracingConfiguration={"enabled": True})
        assert made["stateMachineArn"] == outputs["StateMachine"]
        yield outputs
    finally:
        _moto_config(moto_server, {"stepfunctions": {"execute_state_machine": False}})


@pytest.fixture
def player(sfn_stack: dict[str, str], aws_env: dict[str, str], tmp_path: Path) -> BatchPlayer:
    workdir = tmp_path / "container"
    workdir.mkdir()
    return BatchPlayer(boto3.client("batch"), sfn_stack["JobQueue"], workdir, machine=aws_env)


@pytest.fixture
def sketch(tmp_path: Path) -> Path:
    path = tmp_path / "marked.py"
    path.write_text(SKETCH.format(fail=str(tmp_path / "fail-marker"),
                                  hold=str(tmp_path / "hold-marker")))
    return path


def _render_args(stack: dict[str, str], sketch: Path, run_id: str, *extra: str) -> list[str]:
    return ["render", str(sketch), "-o", str(sketch.parent / f"{run_id}.mp4"),
            "--runner", "stepfunctions", "--stack", stack["StackName"], "--frames", str(FRAMES),
            "--size", f"{SIZE[0]}x{SIZE[1]}", "--per-job", str(PER_JOB), "--run-id", run_id,
            *extra]


def _status(stack: dict[str, str], run_id: str, cwd: Path) -> dict[str, Any]:
    done = run_cli("status", run_id, "--json", "--joblog", stack["JobLogUrl"], cwd=cwd)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _execution(stack: dict[str, str], name: str) -> dict[str, Any]:
    arn = stack["StateMachine"].replace(":stateMachine:", ":execution:") + f":{name}"
    found: dict[str, Any] = boto3.client("stepfunctions").describe_execution(executionArn=arn)
    return found


def _states(stack: dict[str, str], name: str) -> list[str]:
    """The states the execution entered, in order."""
    arn = _execution(stack, name)["executionArn"]
    events = boto3.client("stepfunctions").get_execution_history(executionArn=arn,
                                                                 maxResults=1000)["events"]
    return [e["stateEnteredEventDetails"]["name"] for e in events
            if "stateEnteredEventDetails" in e]


def _until(check: Callable[[], Any], *, timeout: float = 90, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}")


def _assert_video(path: Path, sketch: Path) -> None:
    frames = list(read_frames(path))
    assert len(frames) == FRAMES
    source = FrameSource(load_sketch(str(sketch)), width=SIZE[0], height=SIZE[1], fps="30",
                         total_frames=FRAMES)
    for i, frame in enumerate(frames):
        assert psnr(frame, source.frame(i)[..., :3]) >= 35, f"frame {i}"


def test_a_run_is_one_execution_plan_render_array_encode(sfn_stack: dict[str, str],
                                                         player: BatchPlayer, sketch: Path,
                                                         tmp_path: Path) -> None:
    """`--wait` starts the execution named by the run id, prints its console link, follows the
    run and downloads the video; the execution went Plan -> ReadPlan -> one render array job of
    the plan's size -> Encode -> Done, and every container got the contract from its input."""
    with player.in_background():
        done = run_cli(*_render_args(sfn_stack, sketch, "sfn-wait", "--wait"), cwd=tmp_path,
                       env=dict(player.machine))
    assert done.returncode == 0, done.stderr
    assert "started on AWS Step Functions, see https://us-east-1.console.aws.amazon.com/states/" \
        in done.stderr
    assert "run sfn-wait: 12 frames in" in done.stdout
    _assert_video(tmp_path / "sfn-wait.mp4", sketch)

    # the video is there once the encode job wrote SUCCEEDED; the Encode state ends as its
    # .sync task next polls Batch
    execution = _until(lambda: (e := _execution(sfn_stack, "sfn-wait"))["status"] != "RUNNING"
                       and e, what="the execution to end")
    assert execution["status"] == "SUCCEEDED"
    assert _states(sfn_stack, "sfn-wait") == [
        "PlanOrResume", "Plan", "ReadPlan", "Slices", "FanOut", "RenderArray", "Encode", "Done"]
    plan = [p for p in player.played if p.env["JOB_TYPE"] == "plan"]
    renders = [p for p in player.played if p.env["JOB_TYPE"] == "render"]
    encodes = [p for p in player.played if p.env["JOB_TYPE"] == "encode"]
    assert len(plan) == 1 and len(encodes) == 1
    assert sorted(p.env["AWS_BATCH_JOB_ARRAY_INDEX"] for p in renders) == ["0", "1", "2", "3"]
    assert plan[0].env["FRAMEFARM_EXECUTION"] == execution["executionArn"]
    assert plan[0].env["TOTAL_FRAMES"] == str(FRAMES)
    for played in renders + encodes:
        assert played.env["FRAMEFARM_RUN_ID"] == "sfn-wait"
        assert played.env["TRACEPARENT"] == plan[0].env["TRACEPARENT"]  # one trace per run

    report = _status(sfn_stack, "sfn-wait", tmp_path)
    assert report["status"] == "SUCCEEDED" and report["runner"] == "stepfunctions"
    assert report["engine"]["status"] == "SUCCEEDED"
    assert report["engine"]["execution"] == execution["executionArn"]
    text = run_cli("status", "sfn-wait", "--joblog", sfn_stack["JobLogUrl"], cwd=tmp_path)
    assert f"execution SUCCEEDED  {execution['executionArn']}" in text.stdout

    # Started again (a new trace, so other input): the execution of that name is found and
    # followed, nothing runs twice, and the video is downloaded again.
    (tmp_path / "sfn-wait.mp4").unlink()
    played = len(player.played)
    again = run_cli(*_render_args(sfn_stack, sketch, "sfn-wait", "--wait"), cwd=tmp_path,
                    env=dict(player.machine))
    assert again.returncode == 0, again.stderr
    assert "run sfn-wait was already started on AWS Step Functions" in again.stderr
    assert len(player.played) == played
    _assert_video(tmp_path / "sfn-wait.mp4", sketch)
    listed = boto3.client("stepfunctions").list_executions(
        stateMachineArn=sfn_stack["StateMachine"])["executions"]
    assert [e["name"] for e in listed].count("sfn-wait") == 1


def test_a_sketch_error_fails_the_execution_naming_the_job(sfn_stack: dict[str, str],
                                                           player: BatchPlayer, sketch: Path,
                                                           tmp_path: Path) -> None:
    """Frame 4 raises: its chunk's container exits 2 (not retried), the render array job fails,
    the Catch records the failure on the run's job-log item and the execution fails with
    framefarm.RenderFailed and a Cause naming the render job; the command fails with the
    sketch's error and its frame, exit 2 as on the local runner (the container's own exit code,
    kept in the job log: a retry will not help), and `status` shows the failed execution."""
    (tmp_path / "fail-marker").touch()
    with player.in_background():
        done = run_cli(*_render_args(sfn_stack, sketch, "sfn-fail", "--wait"), cwd=tmp_path,
                       env=dict(player.machine))
        execution = _until(lambda: (e := _execution(sfn_stack, "sfn-fail"))["status"]
                           != "RUNNING" and e, what="the execution to end")
    assert done.returncode == 2, done.stderr
    assert "failed on frame 4: RuntimeError: the marker file is there" in done.stderr
    assert execution["status"] == "FAILED"
    assert execution["error"] == "framefarm.RenderFailed"
    assert execution["cause"].startswith("framefarm-sfn-fail-render failed (States.TaskFailed)")
    assert _states(sfn_stack, "sfn-fail")[-3:] == ["RenderCaught", "RecordFailure", "Failed"]
    assert not any(p.env["JOB_TYPE"] == "encode" for p in player.played)
    chunk1 = [p.done.returncode for p in player.played
              if p.env["JOB_TYPE"] == "render" and p.env["AWS_BATCH_JOB_ARRAY_INDEX"] == "1"]
    assert chunk1 == [2]  # a sketch error is not retried, by Batch or by the state machine
    assert _states(sfn_stack, "sfn-fail").count("RenderArray") == 1
    item = boto3.client("dynamodb").get_item(
        TableName=sfn_stack["JobLogUrl"].removeprefix("dynamodb://"),
        Key={"pk": {"S": "RUN#sfn-fail"}, "sk": {"S": "RUN"}})["Item"]
    recorded = json.loads(item["engine_failure"]["S"])
    assert recorded["step"] == "Render" and recorded["job"] == "framefarm-sfn-fail-render"
    assert recorded["error"] == "States.TaskFailed"
    report = _status(sfn_stack, "sfn-fail", tmp_path)
    assert report["status"] == "FAILED"
    assert report["engine"]["status"] == "FAILED"
    assert report["engine"]["error"].startswith("framefarm.RenderFailed: framefarm-sfn-fail-render")
    failed = [j for j in report["jobs"] if j["status"] == "FAILED"]
    assert [j["job"] for j in failed] == ["render:1"]


def test_cancel_stops_the_execution_and_its_jobs_then_resume_finishes(
        sfn_stack: dict[str, str], player: BatchPlayer, sketch: Path, tmp_path: Path) -> None:
    """While chunk 1 renders, `framefarm cancel` stops the execution and terminates its running
    Batch job (the container gets SIGTERM); nothing stays RUNNING in the job log. `resume`
    starts a new execution, RUN-resume-1, that skips the plan and renders only the chunks
    without a verified segment, then encodes: the video is the sketch's."""
    (tmp_path / "hold-marker").touch()
    with player.in_background():
        done = run_cli(*_render_args(sfn_stack, sketch, "sfn-cancel"), cwd=tmp_path,
                       env=dict(player.machine))
        assert done.returncode == 0, done.stderr
        assert "run sfn-cancel: submitted to AWS Step Functions" in done.stdout
        _until(lambda: any(r.job == "render:1" and r.status == "RUNNING" for r in
                           open_joblog(sfn_stack["JobLogUrl"]).latest_jobs("sfn-cancel")),
               what="chunk 1 to run")
        cancelled = run_cli("cancel", "sfn-cancel", "--joblog", sfn_stack["JobLogUrl"],
                            "--storage", sfn_stack["StorageUrl"], cwd=tmp_path)
        assert cancelled.returncode == 0, cancelled.stderr
        execution = _until(lambda: (e := _execution(sfn_stack, "sfn-cancel"))["status"]
                           != "RUNNING" and e, what="the execution to stop")
        _until(lambda: any(p.terminated for p in player.played), what="the container to stop")
    assert "execution sfn-cancel stopped" in cancelled.stdout + cancelled.stderr
    assert execution["status"] == "ABORTED"
    stopped = [p for p in player.played if p.terminated]
    assert [p.env["AWS_BATCH_JOB_ARRAY_INDEX"] for p in stopped] == ["1"]
    report = _status(sfn_stack, "sfn-cancel", tmp_path)
    assert report["status"] == "CANCELLED"
    assert not [j for j in report["jobs"] if j["status"] in ("RUNNING", "SUBMITTED")]

    (tmp_path / "hold-marker").unlink()
    verified = {r.index for r in open_joblog(sfn_stack["JobLogUrl"]).latest_jobs("sfn-cancel")
                if r.kind == "render" and r.status == "SUCCEEDED"}
    before = len(player.played)
    with player.in_background():
        resumed = run_cli("resume", "sfn-cancel", "--joblog", sfn_stack["JobLogUrl"],
                          "--storage", sfn_stack["StorageUrl"], cwd=tmp_path)
        execution = _until(lambda: (e := _execution(sfn_stack, "sfn-cancel-resume-1"))["status"]
                           != "RUNNING" and e, what="the resume's execution to end")
    assert resumed.returncode == 0, resumed.stderr
    assert execution["status"] == "SUCCEEDED"
    states = _states(sfn_stack, "sfn-cancel-resume-1")
    assert states[:2] == ["PlanOrResume", "FanOut"] and "Plan" not in states
    again = [p for p in player.played[before:] if p.env["JOB_TYPE"] == "render"]
    rendered = sorted(_listed(p.env) for p in again)
    assert rendered == sorted(set(range(4)) - verified)
    assert not any(p.env["JOB_TYPE"] == "plan" for p in player.played[before:])
    video = open_storage(sfn_stack["StorageUrl"]).get_file("runs/sfn-cancel/output.mp4",
                                                           tmp_path / "sfn-cancel.mp4")
    _assert_video(video, sketch)
    assert _status(sfn_stack, "sfn-cancel", tmp_path)["status"] == "SUCCEEDED"


def _listed(env: dict[str, str]) -> int:
    """The chunk a render container rendered, from its FRAMEFARM_CHUNKS and array index."""
    from framefarm.job import _listed_chunk

    index = env.get("AWS_BATCH_JOB_ARRAY_INDEX")
    return _listed_chunk(env["FRAMEFARM_CHUNKS"], int(index) if index is not None else None) \
        if env.get("FRAMEFARM_CHUNKS") else int(index or 0)


def test_above_the_array_limit_slices_render_in_a_distributed_map(
        sfn_stack: dict[str, str], player: BatchPlayer, sketch: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With Batch's array limit taken as 2 (the real one is 10,000), every segment of a
    finished run lost (their bytes deleted) is rendered again by `resume` as a Distributed Map
    of two array jobs, FRAMEFARM_CHUNKS=0-1 and 2-3, each a child execution; then encode."""
    from framefarm import cli
    from framefarm.runners import stepfunctions

    with player.in_background():
        done = run_cli(*_render_args(sfn_stack, sketch, "sfn-map", "--wait"), cwd=tmp_path,
                       env=dict(player.machine))
        _until(lambda: _execution(sfn_stack, "sfn-map")["status"] != "RUNNING",
               what="the execution to end")
    assert done.returncode == 0, done.stderr
    storage = open_storage(sfn_stack["StorageUrl"])
    for key in storage.list("runs/sfn-map/segments/"):
        storage.delete(key)
    monkeypatch.setattr(stepfunctions, "MAX_ARRAY_SIZE", 2)
    before = len(player.played)
    with player.in_background():
        code = cli.main(["resume", "sfn-map", "--joblog", sfn_stack["JobLogUrl"],
                         "--storage", sfn_stack["StorageUrl"]])
        execution = _until(lambda: (e := _execution(sfn_stack, "sfn-map-resume-1"))["status"]
                           != "RUNNING" and e, what="the resume's execution to end")
    assert code == 0
    assert execution["status"] == "SUCCEEDED"
    assert "RenderSlices" in _states(sfn_stack, "sfn-map-resume-1")
    again = [p for p in player.played[before:] if p.env["JOB_TYPE"] == "render"]
    assert sorted((p.env["FRAMEFARM_CHUNKS"], p.env["AWS_BATCH_JOB_ARRAY_INDEX"])
                  for p in again) == [("0-1", "0"), ("0-1", "1"), ("2-3", "0"), ("2-3", "1")]
    assert {p.job_name for p in again} == {"framefarm-sfn-map-render-0",
                                           "framefarm-sfn-map-render-1"}
    video = storage.get_file("runs/sfn-map/output.mp4", tmp_path / "sfn-map.mp4")
    _assert_video(video, sketch)


def test_a_container_that_dies_is_retried_by_its_job_definition(
        sfn_stack: dict[str, str], player: BatchPlayer, tmp_path: Path) -> None:
    """A render container that dies (exit 137, as when its host goes away) is retried by the
    job definition's retryStrategy, inside the same RenderArray state; the run succeeds."""
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
    with player.in_background():
        done = run_cli("render", str(flaky), "-o", str(tmp_path / "flaky.mp4"), "--runner",
                       "stepfunctions", "--stack", sfn_stack["StackName"], "--frames", "8",
                       "--size", "64x48", "--per-job", "4", "--run-id", "sfn-flaky", "--wait",
                       cwd=tmp_path, env=dict(player.machine))
        execution = _until(lambda: (e := _execution(sfn_stack, "sfn-flaky"))["status"]
                           != "RUNNING" and e, what="the execution to end")
    assert done.returncode == 0, done.stderr
    assert execution["status"] == "SUCCEEDED"
    renders = [(p.env["AWS_BATCH_JOB_ARRAY_INDEX"], p.env["AWS_BATCH_JOB_ATTEMPT"],
                p.done.returncode) for p in player.played if p.env["JOB_TYPE"] == "render"]
    assert sorted(renders) == [("0", "1", 137), ("0", "2", 0), ("1", "1", 0)]
    assert _states(sfn_stack, "sfn-flaky").count("RenderArray") == 1
    frames = list(read_frames(tmp_path / "flaky.mp4"))
    assert len(frames) == 8
    for i, frame in enumerate(frames):  # each frame the sketch's grey, within encoding noise
        assert abs(float(frame.mean()) - i * 20) < 2, f"frame {i}"
