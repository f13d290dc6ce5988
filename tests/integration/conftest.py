"""Fixtures of the AWS Batch tests: deploy/cloudformation.yaml deployed to the moto server, and
AWS Batch played by tests/batch_player.py."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.batch_player import BatchPlayer
from tests.cfn import load_template
from tests.conftest import unique_name


def _for_moto(template: dict[str, Any], parameters: dict[str, str]) -> None:
    """The two changes the template needs on moto, made in place."""
    # moto's CloudFormation needs a ServiceRole on compute environments; AWS itself uses
    # Batch's service-linked role when there is none, as the template intends.
    role = boto3.client("iam").create_role(RoleName=unique_name("batch-service"),
                                           AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    # AWS Batch leaves out a variable whose value is empty (an OtlpEndpoint not given), where
    # moto's CloudFormation would pass an empty value on as `[]`.
    values = {name: str(p["Default"]) for name, p in template["Parameters"].items() if "Default" in p}
    empty = [{"Ref": name} for name, value in {**values, **parameters}.items() if value == ""]
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Batch::ComputeEnvironment":
            resource["Properties"]["ServiceRole"] = role
        elif resource["Type"] == "AWS::Batch::JobDefinition":
            container = resource["Properties"]["ContainerProperties"]
            container["Environment"] = [e for e in container.get("Environment", [])
                                        if e["Value"] not in empty]


@pytest.fixture
def deploy_stack(aws_env: dict[str, str]) -> Callable[..., dict[str, str]]:
    """Deploys deploy/cloudformation.yaml to the moto server with the given parameters (a VPC and
    subnet are made for it); returns the stack's outputs and its StackName."""

    def deploy(**parameters: str) -> dict[str, str]:
        ec2 = boto3.client("ec2")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
        template = load_template()
        _for_moto(template, parameters)
        given = {"VpcId": vpc, "SubnetIds": subnet, **parameters}
        name = unique_name("ff")
        cloudformation = boto3.client("cloudformation")
        cloudformation.create_stack(
            StackName=name, TemplateBody=json.dumps(template), Capabilities=["CAPABILITY_IAM"],
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in given.items()])
        deadline = time.monotonic() + 60
        while True:
            found = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
            if not found["StackStatus"].endswith("_IN_PROGRESS") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert found["StackStatus"] == "CREATE_COMPLETE", found.get("StackStatusReason")
        return {"StackName": name, **{o["OutputKey"]: o["OutputValue"] for o in found["Outputs"]}}

    return deploy


@pytest.fixture
def stack(deploy_stack: Callable[..., dict[str, str]]) -> dict[str, str]:
    """The stack deployed with its default parameters; its outputs."""
    return deploy_stack()


@pytest.fixture
def player(stack: dict[str, str], aws_env: dict[str, str], tmp_path: Path) -> BatchPlayer:
    """AWS Batch played for `stack`: each container gets `aws_env` as what its host provides."""
    workdir = tmp_path / "container"
    workdir.mkdir()
    return BatchPlayer(boto3.client("batch"), stack["JobQueue"], workdir, machine=aws_env)
