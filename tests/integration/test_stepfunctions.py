"""`--runner stepfunctions` against the moto server: the stack's state machine, made from
deploy/cloudformation.yaml's own definition, is executed by moto's Step Functions interpreter
(the ASL engine it shares with LocalStack), whose `batch:submitJob.sync` tasks submit real
Batch jobs that tests/batch_player.py runs as `framefarm job` processes. Each video is checked
frame by frame against its sketch; the job log and the execution's history are read back.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
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
from tests.batch_player import BatchPlayer, env_of
from tests.cfn import load_template, resolve
from tests.conftest import framefarm_command, psnr, run_cli

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
        outputs = deploy_stack()
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
