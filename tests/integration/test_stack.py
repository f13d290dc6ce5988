"""deploy/cloudformation.yaml read as a reviewer would: cfn-lint clean, and the choices that
matter checked (what jobs may do, what they are told, how they retry, how data is kept)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from framefarm import config
from framefarm.runners.batch import STACK_OUTPUTS
from tests.cfn import TEMPLATE, load_template
from tests.containers import image_stages

pytestmark = pytest.mark.integration


def resources(kind: str) -> dict[str, dict[str, Any]]:
    return {name: r["Properties"] for name, r in load_template()["Resources"].items()
            if r["Type"] == kind}


def test_cfn_lint_is_clean() -> None:
    lint = shutil.which("cfn-lint", path=str(Path(sys.executable).parent)) or shutil.which("cfn-lint")
    assert lint, "cfn-lint is not installed: pip install -e '.[dev]'"
    done = subprocess.run([lint, str(TEMPLATE)], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_outputs_name_what_the_cli_reads() -> None:
    assert set(STACK_OUTPUTS) <= set(load_template()["Outputs"])


def test_job_definitions_run_their_own_image_and_contract() -> None:
    definitions = resources("AWS::Batch::JobDefinition")
    stages = image_stages()
    assert set(definitions) == {"PlanJobDefinition", "RenderJobDefinition", "EncodeJobDefinition"}
    for name, props in definitions.items():
        kind = name.removesuffix("JobDefinition").lower()
        container = props["ContainerProperties"]
        env = {e["Name"]: e["Value"] for e in container["Environment"]}
        assert env["JOB_TYPE"] == kind
        assert set(env) <= set(config.CONTRACT), set(env) - set(config.CONTRACT)
        assert stages[kind].env["JOB_TYPE"] == kind  # the image tag names a Dockerfile target
        assert f":{kind}-" in container["Image"]["Fn::Sub"]
        assert "Command" not in container  # the image's entrypoint, `framefarm job`, runs
        assert {"FRAMEFARM_STORAGE", "FRAMEFARM_JOBLOG"} <= set(env)
    plan = {e["Name"] for e in definitions["PlanJobDefinition"]["ContainerProperties"]["Environment"]}
    assert {"FRAMEFARM_SKETCH", "TOTAL_FRAMES", "FRAMES_PER_RENDER_JOB", "FRAMEFARM_JOB_QUEUE",
            "FRAMEFARM_RENDER_JOB_DEFINITION", "FRAMEFARM_ENCODE_JOB_DEFINITION"} <= plan


def test_retry_infrastructure_failures_not_sketch_errors() -> None:
    for props in resources("AWS::Batch::JobDefinition").values():
        strategy = props["RetryStrategy"]
        assert strategy["Attempts"] == 3
        rules = strategy["EvaluateOnExit"]
        host = next(i for i, r in enumerate(rules) if r.get("OnStatusReason") == "Host EC2*")
        user = next(i for i, r in enumerate(rules) if r.get("OnExitCode") == "2")
        assert (rules[host]["Action"], rules[user]["Action"]) == ("RETRY", "EXIT")
        assert host < user  # a lost host is retried whatever the exit code


def test_job_role_is_least_privilege() -> None:
    role = resources("AWS::IAM::Role")["JobRole"]
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    assert "ManagedPolicyArns" not in role
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert all("*" not in a for a in actions), actions
        if statement["Resource"] == "*":  # only APIs without resource-level permissions
            assert set(actions) <= {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
    by_sid = {s["Sid"]: s for s in statements}
    assert by_sid["Objects"]["Resource"] == {"Fn::Sub": "${Bucket.Arn}/framefarm/*"}
    assert by_sid["JobLog"]["Resource"][0] == {"Fn::GetAtt": ["JobLogTable", "Arn"]}
    submit = by_sid["SubmitDownstream"]["Resource"]
    assert submit[0] == {"Ref": "JobQueue"}
    assert all("${AWS::StackName}-render" in r["Fn::Sub"] or "${AWS::StackName}-encode" in r["Fn::Sub"]
               for r in submit[1:])


def test_data_is_private_encrypted_and_kept_as_long_as_asked() -> None:
    bucket = resources("AWS::S3::Bucket")["Bucket"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    rules = {r["Id"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}
    from framefarm.storage.s3 import EXPIRES_TAG

    tag = rules["expire-segments"]["TagFilters"][0]
    assert f"{tag['Key']}={tag['Value']}" == EXPIRES_TAG
    table = resources("AWS::DynamoDB::Table")["JobLogTable"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}


def test_spot_first_then_on_demand() -> None:
    environments = resources("AWS::Batch::ComputeEnvironment")
    queue = resources("AWS::Batch::JobQueue")["JobQueue"]
    order = [environments[e["ComputeEnvironment"]["Ref"]]["ComputeResources"]["Type"]
             for e in sorted(queue["ComputeEnvironmentOrder"], key=lambda e: e["Order"])]
    assert order == ["SPOT", "EC2"]
    for props in environments.values():
        assert props["ComputeResources"]["MinvCpus"] == 0
