"""deploy/cloudformation.yaml read as a reviewer would: cfn-lint clean, and the choices that
matter checked (what jobs may do, what they are told, how they retry, how data is kept).

Most checks resolve the template's Ref/Sub/GetAtt against made-up names of one deployed stack
(`STACK`), so they compare what CloudFormation would really produce: the bucket a job is told
to use is the bucket its role may write, the job definition the plan job submits is one the
role may submit, and so on. Deploying the template to a moto server and reading its outputs
through `stack_settings` is tests/integration/test_batch.py's `stack` fixture.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from framefarm import config
from framefarm.job import JobEnv
from framefarm.runners import plan_hook
from framefarm.runners.batch import STACK_OUTPUTS, BatchTargets, stack_settings
from framefarm.sketch import load_sketch
from framefarm.steps._keys import output_key, plan_key, segment_key
from framefarm.storage.s3 import EXPIRES_TAG
from tests.cfn import TEMPLATE, load_template, resolve
from tests.containers import image_stages

pytestmark = pytest.mark.integration

JOB_TYPES = ("plan", "render", "encode")
REGION, ACCOUNT, NAME = "eu-west-1", "123456789012", "ff"
ARN = f"{REGION}:{ACCOUNT}"
BUCKET = "ff-bucket-1a2b3c"
TABLE = "ff-JobLogTable-4D5E6F"
QUEUE = f"arn:aws:batch:{ARN}:job-queue/ff-queue"
REPOSITORY = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/ff"

# What Ref and GetAtt give for each resource of one deployed stack named "ff".
STACK: dict[str, Any] = {
    "AWS::StackName": NAME, "AWS::Region": REGION, "AWS::AccountId": ACCOUNT,
    "AWS::Partition": "aws", "VpcId": "vpc-1", "SubnetIds": ["subnet-1", "subnet-2"],
    "Bucket": BUCKET, "Bucket.Arn": f"arn:aws:s3:::{BUCKET}",
    "JobLogTable": TABLE, "JobLogTable.Arn": f"arn:aws:dynamodb:{ARN}:table/{TABLE}",
    "JobQueue": QUEUE,
    **{f"{kind.title()}JobDefinition": f"arn:aws:batch:{ARN}:job-definition/ff-{kind}:1"
       for kind in JOB_TYPES},
    "Repository": "ff", "Repository.Arn": f"arn:aws:ecr:{ARN}:repository/ff",
    "Repository.RepositoryUri": REPOSITORY,
    "LogGroup": "/aws/batch/ff", "LogGroup.Arn": f"arn:aws:logs:{ARN}:log-group:/aws/batch/ff:*",
    "JobRole": "ff-JobRole-1", "JobRole.Arn": f"arn:aws:iam::{ACCOUNT}:role/ff-JobRole-1",
    "ExecutionRole.Arn": f"arn:aws:iam::{ACCOUNT}:role/ff-ExecutionRole-1",
    "InstanceRole": "ff-InstanceRole-1", "InstanceProfile.Arn":
        f"arn:aws:iam::{ACCOUNT}:instance-profile/ff-InstanceProfile-1",
    "InstanceSecurityGroup": "sg-1", "SpotComputeEnvironment": f"arn:aws:batch:{ARN}:ce/spot",
    "OnDemandComputeEnvironment": f"arn:aws:batch:{ARN}:ce/on-demand",
    "StateMachine": f"arn:aws:states:{ARN}:stateMachine:ff-run",
    "StateMachineRole.Arn": f"arn:aws:iam::{ACCOUNT}:role/ff-StateMachineRole-1",
}


@cache
def deployed() -> dict[str, Any]:
    """The template as CloudFormation would deploy it as stack "ff", parameters at defaults."""
    template = load_template()
    defaults = {name: p["Default"] for name, p in template["Parameters"].items() if "Default" in p}
    names = {**{k: str(v) for k, v in defaults.items()}, **STACK}
    resolved: dict[str, Any] = resolve({"Resources": template["Resources"],
                                        "Outputs": template["Outputs"]}, names)
    return resolved


def resources(kind: str, *, resolved: bool = False) -> dict[str, dict[str, Any]]:
    template = deployed() if resolved else load_template()
    return {name: r["Properties"] for name, r in template["Resources"].items()
            if r["Type"] == kind}


def job_definitions() -> dict[str, dict[str, Any]]:
    """Job type -> its job definition's properties, resolved."""
    return {name.removesuffix("JobDefinition").lower(): props for name, props
            in resources("AWS::Batch::JobDefinition", resolved=True).items()}


def environment(kind: str) -> dict[str, str]:
    return {e["Name"]: str(e["Value"])
            for e in job_definitions()[kind]["ContainerProperties"]["Environment"]}


def outputs() -> dict[str, str]:
    return {name: o["Value"] for name, o in deployed()["Outputs"].items()}


def statements(role: str) -> list[dict[str, Any]]:
    props = resources("AWS::IAM::Role", resolved=True)[role]
    found = [s for p in props["Policies"] for s in p["PolicyDocument"]["Statement"]]
    for s in found:  # one shape: lists of actions and resources
        s["Action"] = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        s["Resource"] = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
    return found


def allows(role: str, action: str, resource: str) -> bool:
    """Whether `role`'s inline policies allow `action` on `resource` (IAM's wildcards; the
    template has no Deny and no NotAction/NotResource, and conditions are not evaluated)."""
    return any(s["Effect"] == "Allow"
               and any(fnmatchcase(action, a) for a in s["Action"])
               and any(fnmatchcase(resource, r) for r in s["Resource"])
               for s in statements(role))


# -- the template is valid, and names what the CLI and the jobs read ---------------------------

def test_cfn_lint_is_clean() -> None:
    lint = shutil.which("cfn-lint", path=str(Path(sys.executable).parent)) or shutil.which("cfn-lint")
    assert lint, "cfn-lint is not installed: pip install -e '.[dev]'"
    done = subprocess.run([lint, str(TEMPLATE)], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_outputs_are_what_the_cli_reads_and_the_jobs_are_told() -> None:
    found = outputs()
    assert set(STACK_OUTPUTS) | {"Bucket", "RepositoryUri", "LogGroup"} <= set(found)
    assert (found["StorageUrl"], found["JobLogUrl"]) == (f"s3://{BUCKET}/framefarm",
                                                         f"dynamodb://{TABLE}")
    for kind in JOB_TYPES:
        env = environment(kind)
        assert (env["FRAMEFARM_STORAGE"], env["FRAMEFARM_JOBLOG"]) == (found["StorageUrl"],
                                                                       found["JobLogUrl"])

    class CloudFormation:  # describe_stacks as boto3 returns it for this stack
        def describe_stacks(self, StackName: str) -> dict[str, Any]:
            return {"Stacks": [{"StackName": StackName, "Outputs": [
                {"OutputKey": k, "OutputValue": v} for k, v in found.items()]}]}

    settings = stack_settings(NAME, client=CloudFormation())
    assert settings == {variable: found[key] for key, variable in STACK_OUTPUTS.items()}
    assert settings[config.JOB_QUEUE] == environment("plan")[config.JOB_QUEUE]


def test_each_job_definition_runs_its_own_image_with_the_contract() -> None:
    stages = image_stages()
    definitions = job_definitions()
    assert set(definitions) == set(JOB_TYPES)
    for kind, props in definitions.items():
        container = props["ContainerProperties"]
        env = environment(kind)
        assert env["JOB_TYPE"] == kind
        allowed = set(config.CONTRACT) | set(config.TRACING_SETTINGS)
        assert set(env) <= allowed, set(env) - allowed
        assert env[config.OTEL_ENDPOINT] == ""  # OtlpEndpoint: no collector unless given
        assert env[config.JOBLOG_TTL_DAYS] == "90"  # JobLogRetentionDays
        assert props["JobDefinitionName"] == f"{NAME}-{kind}"
        # REPOSITORY:KIND-TAG, KIND a target of deploy/Dockerfile that presets the same JOB_TYPE
        assert container["Image"] == f"{REPOSITORY}:{kind}-latest"
        assert stages[kind].env["JOB_TYPE"] == kind
        assert "Command" not in container  # the image's entrypoint, `framefarm job`, runs as is
        assert {r["Type"] for r in container["ResourceRequirements"]} == {"VCPU", "MEMORY"}
        assert container["JobRoleArn"] == STACK["JobRole.Arn"]
        assert container["LogConfiguration"] == {"LogDriver": "awslogs", "Options": {
            "awslogs-group": "/aws/batch/ff", "awslogs-stream-prefix": kind}}
        assert props["Timeout"]["AttemptDurationSeconds"]
    assert environment("render")[config.JOB_CPUS] == str(next(
        r["Value"] for r in definitions["render"]["ContainerProperties"]["ResourceRequirements"]
        if r["Type"] == "VCPU"))


def test_the_plan_definition_alone_runs_the_seeds_quick_start() -> None:
    """`aws batch submit-job … --job-definition PLAN --container-overrides
    environment="[{name=TOTAL_FRAMES,value=120},{name=FRAMES_PER_RENDER_JOB,value=30}]"`:
    the plan job's environment (image ENV + definition + overrides) is a whole plan job."""
    definitions = job_definitions()
    env = {**image_stages()["plan"].env, **environment("plan"),
           "TOTAL_FRAMES": "120", "FRAMES_PER_RENDER_JOB": "30", "AWS_BATCH_JOB_ID": "job-1"}
    job = JobEnv.from_environ(env)
    targets = BatchTargets.from_environ(env)
    assert job.plan is not None and targets is not None
    assert plan_hook(env) is not None  # `framefarm job` attaches Batch's submission to it
    assert (job.plan.total_frames, job.plan.frames_per_job) == (120, 30)
    assert targets.queue == QUEUE
    assert targets.render_definition == definitions["render"]["JobDefinitionName"]
    assert targets.encode_definition == definitions["encode"]["JobDefinitionName"]
    assert job.plan.start_cost > 0  # Batch's cost to start a job sizes `auto` chunks
    # The default sketch is importable wherever framefarm is installed (the image included).
    assert load_sketch(job.plan.sketch).render is not None
    # Without overrides the definition's own defaults plan a video too.
    plain = JobEnv.from_environ({**image_stages()["plan"].env, **environment("plan")})
    assert plain.plan is not None and plain.plan.total_frames


def test_retry_infrastructure_failures_not_sketch_errors() -> None:
    for props in job_definitions().values():
        strategy = props["RetryStrategy"]
        assert strategy["Attempts"] == 3
        rules = strategy["EvaluateOnExit"]
        host = next(i for i, r in enumerate(rules) if r.get("OnStatusReason") == "Host EC2*")
        user = next(i for i, r in enumerate(rules) if r.get("OnExitCode") == "2")
        assert (rules[host]["Action"], rules[user]["Action"]) == ("RETRY", "EXIT")
        assert host < user  # a lost host is retried whatever the exit code
        assert rules[-1] == {"OnReason": "*", "Action": "RETRY"}  # said, not left implicit


# -- who may do what ----------------------------------------------------------------------------

def test_the_job_role_reaches_what_jobs_are_told_and_nothing_else() -> None:
    storage = outputs()["StorageUrl"].removeprefix("s3://")  # bucket/prefix
    objects = [f"arn:aws:s3:::{storage}/{key}" for key in
               (plan_key("r1"), segment_key("r1", 0), output_key("r1"), "sketches/ab12.py")]
    table = STACK["JobLogTable.Arn"]
    # Every call the job code makes (storage/s3.py, joblog/dynamodb.py, runners/batch.py).
    for action in ("s3:GetObject", "s3:PutObject", "s3:PutObjectTagging", "s3:DeleteObject"):
        assert all(allows("JobRole", action, o) for o in objects), action
    assert allows("JobRole", "s3:ListBucket", STACK["Bucket.Arn"])
    listing = next(s for s in statements("JobRole") if "s3:ListBucket" in s["Action"])
    prefixes = listing["Condition"]["StringLike"]["s3:prefix"]  # only under the storage prefix
    prefix = storage.partition("/")[2]
    assert all(p.startswith(f"{prefix}/") for p in prefixes)
    assert any(fnmatchcase(f"{prefix}/{plan_key('r1')}", p) for p in prefixes)
    for action in ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"):
        assert allows("JobRole", action, table), action
    assert allows("JobRole", "dynamodb:Query", f"{table}/index/runs")
    plan = environment("plan")
    for name in (plan[config.RENDER_JOB_DEFINITION], plan[config.ENCODE_JOB_DEFINITION]):
        for arn in (f"arn:aws:batch:{ARN}:job-definition/{name}",
                    f"arn:aws:batch:{ARN}:job-definition/{name}:7"):
            assert allows("JobRole", "batch:SubmitJob", arn)
    assert allows("JobRole", "batch:SubmitJob", plan[config.JOB_QUEUE])
    # … and not the neighbours.
    for action, resource in [
        ("s3:PutObject", f"arn:aws:s3:::{BUCKET}/other/key"),
        ("s3:GetObject", "arn:aws:s3:::another-bucket/framefarm/runs/r1/plan.json"),
        ("s3:DeleteBucket", STACK["Bucket.Arn"]),
        ("s3:PutBucketPolicy", STACK["Bucket.Arn"]),
        ("dynamodb:Scan", table),
        ("dynamodb:DeleteTable", table),
        ("dynamodb:PutItem", f"arn:aws:dynamodb:{ARN}:table/another-table"),
        ("batch:SubmitJob", f"arn:aws:batch:{ARN}:job-definition/{NAME}-plan:1"),  # no loops
        ("batch:SubmitJob", f"arn:aws:batch:{ARN}:job-definition/other-render:1"),
        ("batch:SubmitJob", f"arn:aws:batch:{ARN}:job-queue/other-queue"),
        ("batch:CancelJob", QUEUE),
        ("iam:PassRole", STACK["JobRole.Arn"]),
    ]:
        assert not allows("JobRole", action, resource), (action, resource)


def test_no_wildcards_beyond_apis_without_resource_permissions() -> None:
    without_resources = {"JobRole": {"xray:PutTraceSegments", "xray:PutTelemetryRecords"},
                         "ExecutionRole": {"ecr:GetAuthorizationToken"},
                         "StateMachineRole": {"batch:DescribeJobs", "batch:TerminateJob",
                                              "xray:PutTraceSegments", "xray:PutTelemetryRecords",
                                              "xray:GetSamplingRules", "xray:GetSamplingTargets"}}
    roles = resources("AWS::IAM::Role")
    for role, allowed_star in without_resources.items():
        assert "ManagedPolicyArns" not in roles[role]
        for statement in statements(role):
            assert all("*" not in a for a in statement["Action"]), statement["Action"]
            if "*" in statement["Resource"]:
                assert set(statement["Action"]) <= allowed_star, statement
    assert allows("ExecutionRole", "ecr:BatchGetImage", STACK["Repository.Arn"])
    assert allows("ExecutionRole", "logs:PutLogEvents",
                  f"arn:aws:logs:{ARN}:log-group:/aws/batch/ff:log-stream:plan/default/1")
    assert not allows("ExecutionRole", "ecr:BatchGetImage", f"arn:aws:ecr:{ARN}:repository/other")
    # the state machine submits its own stack's jobs, reads and notes its own table
    assert allows("StateMachineRole", "batch:SubmitJob", f"arn:aws:batch:{ARN}:job-definition/ff-render:3")
    assert not allows("StateMachineRole", "batch:SubmitJob",
                      f"arn:aws:batch:{ARN}:job-definition/other-render:1")
    assert allows("StateMachineRole", "dynamodb:UpdateItem", STACK["JobLogTable.Arn"])
    assert not allows("StateMachineRole", "dynamodb:DeleteItem", STACK["JobLogTable.Arn"])
    assert allows("StateMachineRole", "states:StartExecution", STACK["StateMachine"])
    assert not allows("StateMachineRole", "s3:GetObject", f"arn:aws:s3:::{BUCKET}/framefarm/x")


# -- data ---------------------------------------------------------------------------------------

def test_the_bucket_is_private_encrypted_tls_only_and_expires_segments() -> None:
    bucket = resources("AWS::S3::Bucket", resolved=True)["Bucket"]
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
        "ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    assert bucket["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    policy = resources("AWS::S3::BucketPolicy", resolved=True)["BucketPolicy"]["PolicyDocument"]
    assert {"Effect": "Deny", "Principal": "*", "Action": "s3:*",
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}}.items() <= {
        k: v for s in policy["Statement"] for k, v in s.items()}.items()
    rules = {r["Id"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}
    # Segments (tagged by storage/s3.py) under the storage prefix expire; nothing else does.
    segments = rules["expire-segments"]
    key = f"framefarm/{segment_key('r1', 0)}"
    assert key.startswith(segments["Prefix"])
    assert [f"{t['Key']}={t['Value']}" for t in segments["TagFilters"]] == [EXPIRES_TAG]
    assert segments["ExpirationInDays"] == "7"  # SegmentExpirationDays
    assert rules["abort-incomplete-uploads"]["AbortIncompleteMultipartUpload"]
    assert load_template()["Resources"]["Bucket"]["DeletionPolicy"] == "Retain"


def test_the_job_log_table_is_on_demand_recoverable_and_expiring() -> None:
    template = load_template()["Resources"]["JobLogTable"]
    table = template["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["pk", "sk"]
    assert template["DeletionPolicy"] == "Retain"


def test_images_keep_release_tags_and_the_last_few_per_job_type() -> None:
    repository = resources("AWS::ECR::Repository")["Repository"]
    assert repository["ImageScanningConfiguration"]["ScanOnPush"] is True
    # Release tags are immutable; the default tag (KIND-latest) may be pushed again.
    assert repository["ImageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    movable = [f["ImageTagMutabilityExclusionFilterValue"]
               for f in repository["ImageTagMutabilityExclusionFilters"]]
    default_tag = load_template()["Parameters"]["ImageTag"]["Default"]
    for kind in JOB_TYPES:
        assert any(fnmatchcase(f"{kind}-{default_tag}", f) for f in movable)
        assert not any(fnmatchcase(f"{kind}-v1.2", f) for f in movable)
    policy = json.loads(repository["LifecyclePolicy"]["LifecyclePolicyText"])
    kept = {tuple(r["selection"].get("tagPrefixList", ())): r["selection"]
            for r in policy["rules"]}
    for kind in JOB_TYPES:
        assert kept[(f"{kind}-",)]["countType"] == "imageCountMoreThan"


# -- where jobs run -----------------------------------------------------------------------------

def test_spot_first_then_on_demand() -> None:
    environments = resources("AWS::Batch::ComputeEnvironment")
    queue = resources("AWS::Batch::JobQueue")["JobQueue"]
    order = [environments[e["ComputeEnvironment"]["Ref"]]["ComputeResources"]
             for e in sorted(queue["ComputeEnvironmentOrder"], key=lambda e: e["Order"])]
    assert [(c["Type"], c["AllocationStrategy"]) for c in order] == [
        ("SPOT", "SPOT_PRICE_CAPACITY_OPTIMIZED"), ("EC2", "BEST_FIT_PROGRESSIVE")]
    for props in environments.values():
        assert "ServiceRole" not in props  # Batch's service-linked role
        compute = props["ComputeResources"]
        assert (compute["MinvCpus"], compute["MaxvCpus"], compute["Subnets"]) == (
            0, {"Ref": "MaxvCpus"}, {"Ref": "SubnetIds"})
        assert compute["SecurityGroupIds"] == [{"Ref": "InstanceSecurityGroup"}]
    group = resources("AWS::EC2::SecurityGroup")["InstanceSecurityGroup"]
    assert "SecurityGroupIngress" not in group and group["SecurityGroupEgress"]
