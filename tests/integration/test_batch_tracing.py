"""A run on AWS Batch is one trace, as a user would check it: the trace context the submitted
jobs carry (read back with DescribeJobs), the spans the containers stored with the run in S3, the
trace id in the DynamoDB job log, and the spans the jobs send to the stack's OTLP collector.

The stack is deploy/cloudformation.yaml on the moto server and AWS Batch is played by
tests/batch_player.py (see test_batch.py).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest

from framefarm.joblog import open_joblog
from framefarm.runners.batch import job_name
from framefarm.storage import open_storage
from framefarm.trace_store import load_spans
from framefarm.tracing import trace_prefix
from tests.batch_player import BatchPlayer, Played, env_of
from tests.conftest import EXAMPLES, run_cli
from tests.otlp import otlp_receiver
from tests.trace_checks import check_one_tree, check_run_shape

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:Tried to parse AWS.+BucketPolicy")]

FRAMES, PER_JOB = 8, 4
SMALL = ("--frames", str(FRAMES), "--per-job", str(PER_JOB), "--size", "64x48")
JOBS = ("plan", "render", "encode")

def _render_on_batch(stack: dict[str, str], player: BatchPlayer, cwd: Path) -> str:
    """`framefarm render … --runner batch --stack NAME` from a machine with no collector; the
    run id it prints (it submits the plan job and returns)."""
    done = run_cli("render", str(EXAMPLES / "plasma.py"), "-o", str(cwd / "out.mp4"),
                   "--runner", "batch", "--stack", stack["StackName"], *SMALL, cwd=cwd,
                   env=dict(player.machine))
    assert done.returncode == 0, done.stderr
    assert "submitted to AWS Batch" in done.stdout
    return done.stdout.split()[1].rstrip(":")


def _play(player: BatchPlayer) -> list[Played]:
    played = player.run_until_idle()
    assert [(p.stage, p.env.get("AWS_BATCH_JOB_ARRAY_INDEX")) for p in played] == [
        ("plan", None), ("render", "0"), ("render", "1"), ("encode", None)], [
        p.done.stderr[-2000:] for p in played if not p.ok]
    assert all(p.ok for p in played), [p.done.stderr[-2000:] for p in played]
    return played


def _trace_context(job: dict[str, Any]) -> tuple[str, str]:
    """The trace id and parent span id a described job carries, after checking that its
    TRACEPARENT (W3C) and _X_AMZN_TRACE_ID (X-Ray) say the same."""
    env = env_of(job)
    given = env.get("TRACEPARENT", ""), env.get("_X_AMZN_TRACE_ID", "")
    w3c = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01", given[0])
    xray = re.fullmatch(r"Root=1-([0-9a-f]{8})-([0-9a-f]{24});Parent=([0-9a-f]{16});Sampled=1",
                        given[1])
    assert w3c and xray, (job["jobName"], given)
    trace_id, parent = w3c.groups()
    assert (xray[1] + xray[2], xray[3]) == (trace_id, parent)
    return trace_id, parent


def _children(spans: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        found.setdefault(s["parent_id"], []).append(s)
    return found


def _in_a_job(span: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> bool:
    """Whether a container made `span`: it is a job's span or below one (not the CLI's)."""
    while span["name"] not in JOBS:
        if span["parent_id"] is None:
            return False
        span = by_id[span["parent_id"]]
    return True


def _job_of(played: Played) -> str:
    index = played.env.get("AWS_BATCH_JOB_ARRAY_INDEX")
    return played.stage if index is None else f"{played.stage}:{index}"


def test_a_run_on_batch_is_one_trace_from_the_cli_through_every_container(
        stack: dict[str, str], player: BatchPlayer, tmp_path: Path) -> None:
    """`framefarm render --runner batch`, then the jobs as Batch runs them: one trace, carried
    by what was submitted, stored with the run, recorded in the job log."""
    began = time.time()
    run_id = _render_on_batch(stack, player, tmp_path)
    submitted_at = time.time()
    storage = open_storage(stack["StorageUrl"])
    cli_parts = storage.list(trace_prefix(run_id))  # before any container ran
    played = _play(player)
    # The stack names no collector (OtlpEndpoint): the containers try to send no spans.
    assert not [p.done.stderr for p in played if "export" in p.done.stderr]

    # What was submitted, read back from Batch: every job carries the trace context of the
    # CLI's run span, the same in both formats.
    contexts = {job["jobName"]: _trace_context(job) for job in player.submitted()}
    assert set(contexts) == {job_name(run_id, kind) for kind in JOBS}
    ((trace_id, parent),) = set(contexts.values())
    # X-Ray ids: the trace id begins with the Unix time (seconds) the run began.
    assert int(began) <= int(trace_id[:8], 16) <= submitted_at

    # The spans the containers stored with the run: one tree under the CLI's run span.
    spans = load_spans(storage, run_id)
    by_id = check_one_tree(spans)
    check_run_shape(spans, by_id, frames=FRAMES, per_job=PER_JOB)
    assert spans[0]["trace_id"] == trace_id
    run = by_id[parent]
    assert (run["name"], run["attributes"]["framefarm.runner"],
            run["attributes"]["framefarm.run_id"]) == ("run", "batch", run_id)
    # The CLI stored its part when it returned; the encode job merged every part, that one too.
    assert cli_parts == [f"{trace_prefix(run_id)}run.{parent}.jsonl"]
    assert storage.list(trace_prefix(run_id)) == []
    # Each job's span names the Batch job whose container made it.
    jobs = {s["attributes"]["framefarm.job"]: s for s in spans if s["name"] in JOBS}
    assert {job: s["attributes"]["aws.batch.job_id"] for job, s in jobs.items()} == {
        _job_of(p): p.job_id for p in played}
    assert {s["kind"] for s in jobs.values()} == {"CONSUMER"}
    children = _children(spans)
    # The plan job's span shows it submitting the render and encode jobs.
    assert Counter(c["name"] for c in children[jobs["plan"]["span_id"]])["Batch.SubmitJob"] == 2
    # botocore's spans of AWS calls hang under framefarm's storage and job-log spans.
    for service, caller in (("S3.", "storage."), ("DynamoDB.", "joblog.")):
        calls = [s for s in spans if s["name"].startswith(service)]
        assert calls and {s["kind"] for s in calls} == {"CLIENT"}
        parents = {by_id[s["parent_id"]]["name"] for s in calls}
        assert all(name.startswith(caller) for name in parents), parents

    # The job log (DynamoDB) records the trace of every job.
    records = open_joblog(stack["JobLogUrl"]).jobs(run_id)
    assert sorted((r.job, r.trace_id) for r in records) == [
        (job, trace_id) for job in ("encode", "plan", "render:0", "render:1")]

    # `framefarm trace` reads the run's trace from S3.
    shown = run_cli("trace", run_id, "--storage", stack["StorageUrl"], "--json", cwd=tmp_path,
                    env=dict(player.machine))
    assert shown.returncode == 0, shown.stderr
    path = json.loads(shown.stdout)["critical_path"]["jobs"]
    assert path[0] == "plan" and path[-1] == "encode"

    # Every storage call shows its S3 requests.
    silent = {s["name"] for s in spans if s["name"].startswith("storage.")
              and not any(c["name"].startswith("S3.") for c in children.get(s["span_id"], []))}
    assert silent == set()  # managed transfers' threads included (they carry the context)


def test_the_jobs_send_their_spans_to_the_collector_the_stack_names(
        deploy_stack: Callable[..., dict[str, str]], aws_env: dict[str, str],
        tmp_path: Path) -> None:
    """Deployed with OtlpEndpoint, every job exports its spans there, in the run's trace; the
    user's machine, with no collector, sends nothing (its run span is in the run's copy)."""
    with otlp_receiver() as receiver:
        stack = deploy_stack(OtlpEndpoint=receiver.endpoint)
        workdir = tmp_path / "container"
        workdir.mkdir()
        player = BatchPlayer(boto3.client("batch"), stack["JobQueue"], workdir, machine=aws_env)
        run_id = _render_on_batch(stack, player, tmp_path)
        played = _play(player)
        received = list(receiver.spans)
    assert {p.env["OTEL_EXPORTER_OTLP_ENDPOINT"] for p in played} == {receiver.endpoint}

    stored = load_spans(open_storage(stack["StorageUrl"]), run_id)
    by_id = check_one_tree(stored)
    trace_id, run = stored[0]["trace_id"], next(s for s in stored if s["name"] == "run")
    in_trace = [s for s in received if s["trace_id"] == trace_id]
    assert len({s["span_id"] for s in in_trace}) == len(in_trace), "a span arrived twice"
    # The collector got exactly the containers' spans of the run's trace.
    assert {s["span_id"] for s in in_trace} == {s["span_id"] for s in stored if _in_a_job(s, by_id)}
    assert Counter(s["name"] for s in in_trace if s["name"] in JOBS) == {"plan": 1, "render": 2,
                                                                          "encode": 1}
    assert {s["parent_id"] for s in in_trace if s["name"] in JOBS} == {run["span_id"]}
    assert {s["resource"]["service.name"] for s in in_trace} == {"framefarm"}

    strays = [s for s in received if s["trace_id"] != trace_id]
    assert strays == []


def test_a_plan_job_submitted_by_hand_starts_the_trace_its_jobs_join(
        stack: dict[str, str], player: BatchPlayer) -> None:
    """The seed's quick start (`aws batch submit-job` of the plan job, no trace context): the
    plan job's span is the root, and the render and encode jobs it submits are its children."""
    overrides = {"TOTAL_FRAMES": "4", "FRAMES_PER_RENDER_JOB": "2", "FRAMEFARM_WIDTH": "64",
                 "FRAMEFARM_HEIGHT": "48"}
    plan_id = boto3.client("batch").submit_job(
        jobName="manualSubmit-plan", jobQueue=stack["JobQueue"],
        jobDefinition=stack["PlanJobDefinition"],
        containerOverrides={"environment": [{"name": k, "value": v} for k, v in overrides.items()]},
    )["jobId"]
    _play(player)
    run_id = f"batch-{plan_id}"

    jobs = {job["jobName"]: job for job in player.submitted()}
    assert not {"TRACEPARENT", "_X_AMZN_TRACE_ID"} & set(env_of(jobs["manualSubmit-plan"]))
    ((trace_id, parent),) = {_trace_context(jobs[job_name(run_id, kind)])
                             for kind in ("render", "encode")}
    spans = load_spans(open_storage(stack["StorageUrl"]), run_id)
    by_id = check_one_tree(spans, root="plan")
    assert (spans[0]["trace_id"], by_id[parent]["name"]) == (trace_id, "plan")
    assert Counter(s["name"] for s in spans if s["parent_id"] == parent and s["name"] in JOBS) == {
        "render": 2, "encode": 1}
    assert sum(s["name"] == "frame" for s in spans) == 4
    records = open_joblog(stack["JobLogUrl"]).jobs(run_id)
    assert {r.trace_id for r in records} == {trace_id}
