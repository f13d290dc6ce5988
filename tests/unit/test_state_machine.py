"""The Step Functions runner's pure parts: how a plan is cut into slices for the state machine,
FRAMEFARM_CHUNKS ranges, execution names, which container hook a plan job gets, the state
machine's own definition in deploy/cloudformation.yaml, and its flags."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from framefarm.errors import UserError
from framefarm.job import _listed_chunk
from framefarm.runners import plan_hook
from framefarm.runners.stepfunctions import (
    MAX_SLICES,
    chunk_text,
    execution_arn,
    execution_input,
    execution_name,
    fanout,
)
from tests.cfn import load_template
from tests.conftest import ROOT, run_cli


def _covered(slices: dict[str, Any], size: int) -> list[int]:
    """Every chunk the slices render, in order, as their containers would find them."""
    return [_listed_chunk(item["chunks"], i) if item["chunks"] else i
            for item in slices["items"] for i in range(item["size"])] if slices["items"] else []


def test_a_plan_within_the_array_limit_is_one_slice_of_every_chunk() -> None:
    assert fanout(4) == {"count": 1, "first": {"size": 4, "chunks": ""},
                         "items": [{"size": 4, "chunks": ""}]}
    assert fanout(10_000)["count"] == 1
    assert fanout(1)["first"] == {"size": 1, "chunks": ""}  # a plain job: the state machine's RenderOne


@pytest.mark.parametrize("size", [10_001, 25_000, 1_000_000])
def test_above_the_array_limit_a_plan_is_cut_into_even_slices(size: int) -> None:
    slices = fanout(size)
    sizes = [item["size"] for item in slices["items"]]
    assert slices["count"] == len(sizes) == -(-size // 10_000)
    assert max(sizes) <= 10_000 and min(sizes) >= 2 and max(sizes) - min(sizes) <= 1
    assert all("," not in item["chunks"] for item in slices["items"])  # one range each
    assert slices["first"] == slices["items"][0]
    if size <= 25_000:
        assert _covered(slices, size) == list(range(size))


def test_a_resume_renders_exactly_its_chunks_in_ranges_that_fit_one_submission() -> None:
    todo = [1, 2, 3, 7, 9, 10]
    assert chunk_text(todo) == "1-3,7,9-10"
    slices = fanout(12, todo)
    assert slices["count"] == 1 and _covered(slices, 12) == todo
    scattered = list(range(0, 60_000, 2))  # 30,000 chunks, no two adjacent
    many = fanout(60_000, scattered)
    assert all(len(item["chunks"]) <= 12_000 and item["size"] >= 2 for item in many["items"])
    assert _covered(many, 60_000) == scattered
    assert fanout(12, []) == {"count": 0, "items": []}  # nothing to render: only encode


def test_a_run_too_big_for_one_execution_is_refused() -> None:
    with pytest.raises(UserError, match=f"more than the {MAX_SLICES} one Step Functions run"):
        fanout(10_000 * MAX_SLICES + 1)


def test_chunk_ranges_are_read_back_and_bad_ones_named() -> None:
    assert [_listed_chunk("0-9999", i) for i in (0, 1, 9999)] == [0, 1, 9999]
    assert [_listed_chunk("3,10-12,20", i) for i in range(5)] == [3, 10, 11, 12, 20]
    assert _listed_chunk("5", None) == 5
    for bad in ("4-2", "a-b", "-3"):
        with pytest.raises(UserError, match=r"is not a list of chunk indexes: use e\.g\."):
            _listed_chunk(bad, 0)
    with pytest.raises(UserError, match="does not name one of the 3 chunks"):
        _listed_chunk("10-12", 3)


def test_an_execution_is_named_by_its_run_id() -> None:
    assert execution_name("title-2024_05") == "title-2024_05"
    assert execution_name("title-2024_05", 2) == "title-2024_05-resume-2"
    dotted = execution_name("v1.2")
    assert dotted.startswith("v1-2-") and dotted != execution_name("v1-2")
    long = execution_name("a" * 128, 3)
    assert len(long) <= 80 and long.endswith("-resume-3")
    machine = "arn:aws:states:eu-west-1:123456789012:stateMachine:ff-run"
    assert execution_arn(machine, "r") == "arn:aws:states:eu-west-1:123456789012:execution:ff-run:r"


def test_the_input_carries_the_contract_to_every_job() -> None:
    env = {"FRAMEFARM_SKETCH": "s3://b/s.py", "TOTAL_FRAMES": "12", "FRAMEFARM_STORAGE": "s3://b/p",
           "FRAMEFARM_JOBLOG": "dynamodb://t", "TRACEPARENT": "00-abc-def-01", "HOME": "/root"}
    data = execution_input(env, run_id="r.1", arn="arn:x", plan=True)
    planned = {e["Name"]: e["Value"] for e in data["plan_environment"]}
    assert planned["JOB_TYPE"] == "plan" and planned["FRAMEFARM_EXECUTION"] == "arn:x"
    assert planned["TOTAL_FRAMES"] == "12" and "HOME" not in planned  # the contract only
    assert data["names"] == {"plan": "framefarm-r-1-plan", "render": "framefarm-r-1-render",
                             "encode": "framefarm-r-1-encode"}
    assert data["downstream"]["TRACEPARENT"] == "00-abc-def-01"
    assert data["downstream"]["FRAMEFARM_FRAME_TIMEOUT"] == ""  # always there: the paths need it
    resumed = execution_input(env, run_id="r", arn="a", plan=False, slices=fanout(4, [1]))
    assert "plan_environment" not in resumed and resumed["fanout"]["slices"]["count"] == 1


def test_a_plan_job_under_step_functions_records_instead_of_submitting() -> None:
    batch = {"FRAMEFARM_JOB_QUEUE": "q", "FRAMEFARM_RENDER_JOB_DEFINITION": "r",
             "FRAMEFARM_ENCODE_JOB_DEFINITION": "e"}
    assert plan_hook(batch).__module__ == "framefarm.runners.batch"  # type: ignore[union-attr]
    hook = plan_hook({**batch, "FRAMEFARM_EXECUTION": "arn:aws:states:::execution:m:r"})
    assert hook is not None and hook.__module__ == "framefarm.runners.stepfunctions"


def _states(definition: dict[str, Any]) -> dict[str, Any]:
    states = dict(definition["States"])
    for state in list(states.values()):
        if state["Type"] == "Map":
            states.update(state["ItemProcessor"]["States"])
    return states


def test_the_state_machine_retries_batch_errors_and_catches_every_task() -> None:
    resources = load_template()["Resources"]
    machine = resources["StateMachine"]["Properties"]
    assert machine["StateMachineType"] == "STANDARD"
    assert machine["TracingConfiguration"] == {"Enabled": True}
    states = _states(machine["Definition"])
    batch_tasks = {n: s for n, s in states.items()
                   if s["Type"] == "Task" and s["Resource"].endswith("batch:submitJob.sync")}
    assert set(batch_tasks) == {"Plan", "RenderArray", "RenderOne", "RenderSlice", "Encode"}
    for name, task in batch_tasks.items():
        [retry] = task["Retry"]
        assert set(retry["ErrorEquals"]) == {"Batch.AWSBatchException",
                                             "Batch.TooManyRequestsException",
                                             "Batch.ServerException"}, name
        assert retry["JitterStrategy"] == "FULL" and retry["BackoffRate"] > 1, name
    top = machine["Definition"]["States"]
    for name, state in top.items():  # every task and map of the run is caught
        if state["Type"] in ("Task", "Map") and name != "RecordFailure":
            assert state["Catch"][0]["ErrorEquals"] == ["States.ALL"], name
    assert top["Failed"]["Type"] == "Fail" and "failed.step" in top["Failed"]["ErrorPath"]
    assert top["RenderSlices"]["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    # the job definitions' retryStrategy stays what retries a container
    assert resources["RenderJobDefinition"]["Properties"]["RetryStrategy"]["Attempts"] == 3


def test_the_state_machine_role_may_do_only_what_a_run_needs() -> None:
    resources = load_template()["Resources"]
    role = resources["StateMachineRole"]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "states.amazonaws.com"}
    [policy] = role["Policies"]
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    actions = {a for s in statements.values()
               for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert actions == {"batch:SubmitJob", "batch:DescribeJobs", "batch:TerminateJob",
                       "events:PutTargets", "events:PutRule", "events:DescribeRule",
                       "dynamodb:GetItem", "dynamodb:UpdateItem", "states:StartExecution",
                       "states:DescribeExecution", "states:StopExecution",
                       "xray:PutTraceSegments", "xray:PutTelemetryRecords",
                       "xray:GetSamplingRules", "xray:GetSamplingTargets"}
    wildcard = {sid for sid, s in statements.items() if s["Resource"] == "*"}
    assert wildcard == {"FollowJobs", "Tracing"}  # no resource-level permissions exist for these
    outputs = load_template()["Outputs"]
    assert outputs["StateMachine"]["Value"] == {"Ref": "StateMachine"}


def test_batch_only_flags_are_refused_for_step_functions(tmp_path: Any) -> None:
    sketch = tmp_path / "s.py"
    sketch.write_text("def render(ctx):\n    return None\n")
    done = run_cli("render", str(sketch), "-o", str(tmp_path / "o.mp4"), "--runner",
                   "stepfunctions", "--job-queue", "q", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == ("framefarm: --job-queue only work with --runner batch; add "
                                   "--runner batch or leave them out")
    done = run_cli("render", str(sketch), "-o", str(tmp_path / "o.mp4"), "--state-machine",
                   "arn:x", cwd=tmp_path)
    assert done.returncode == 2 and "--state-machine only work with --runner stepfunctions" \
        in done.stderr


def test_asl_validator_accepts_the_definition(tmp_path: Path) -> None:
    """The definition, with its substitutions made, passes asl-validator's schema and path
    checks (.ci/run installs it: `npm ci --prefix deploy/asl`); a broken one does not."""
    validator = ROOT / "deploy" / "asl" / "node_modules" / ".bin" / "asl-validator"
    if not validator.exists():
        pytest.skip("asl-validator is not installed: npm ci --prefix deploy/asl")
    text = json.dumps(load_template()["Resources"]["StateMachine"]["Properties"]["Definition"])
    for name in ("JobQueue", "PlanJobDefinition", "RenderJobDefinition", "EncodeJobDefinition"):
        text = text.replace("${" + name + "}", f"arn:aws:batch:us-east-1:123456789012:x/{name}")
    good = tmp_path / "definition.json"
    good.write_text(text.replace("${JobLogTable}", "ff-JobLogTable-1"))
    done = subprocess.run([str(validator), "--json-path", str(good)], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0 and "is valid" in done.stdout, done.stdout + done.stderr
    bad = tmp_path / "broken.json"
    bad.write_text(good.read_text().replace('"Type": "Choice"', '"Type": "Chooser"', 1))
    done = subprocess.run([str(validator), "--json-path", str(bad)], capture_output=True,
                          text=True, check=False)
    assert "PlanOrResume/Type is invalid" in done.stdout + done.stderr
