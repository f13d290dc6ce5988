"""One trace per run, as a user sees it: exported over OTLP to a receiver on 127.0.0.1, kept with
the run in storage, recorded in the job log, carried into `framefarm job` by TRACEPARENT."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLES, framefarm_command, run_cli
from tests.otlp import otlp_receiver
from tests.trace_checks import check_one_tree, check_run_shape

pytestmark = pytest.mark.integration

FRAMES, PER_JOB = 24, 6
SMALL = ("--frames", str(FRAMES), "--per-job", str(PER_JOB), "--size", "160x90", "--workers", "2")


def _render(workdir: Path, env: dict[str, str] | None = None, *extra: str) -> tuple[str, Any]:
    done = run_cli("render", str(EXAMPLES / "plasma.py"), "-o", "out.mp4", *SMALL, *extra,
                   cwd=workdir, env=env)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[1].rstrip(":")
    return run_id, done


def _stored(workdir: Path, run_id: str) -> list[dict[str, Any]]:
    path = workdir / "framefarm-data" / "runs" / run_id / "trace.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_local_render_is_one_trace_exported_over_otlp(workdir: Path) -> None:
    began = time.time()
    with otlp_receiver() as receiver:
        run_id, _ = _render(workdir, {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                                      "OTEL_SERVICE_NAME": "trace-test",
                                      "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=ci"})
        spans = list(receiver.spans)
    by_id = check_one_tree(spans)
    check_run_shape(spans, by_id, frames=FRAMES, per_job=PER_JOB)
    # Worker processes exported their own spans: more than one request reached the receiver.
    assert receiver.requests > 1
    assert {s["resource"]["service.name"] for s in spans} == {"trace-test"}
    assert {s["resource"]["deployment.environment"] for s in spans} == {"ci"}
    trace_id = spans[0]["trace_id"]
    # X-Ray compatible: the trace id starts with the Unix time it began, in seconds.
    assert began - 5 <= int(trace_id[:8], 16) <= time.time() + 1
    # The run keeps the same spans in its storage, and the job log records the trace id.
    assert {s["span_id"] for s in _stored(workdir, run_id)} == set(by_id)
    status = run_cli("status", run_id, "--json", cwd=workdir)
    assert {job["trace_id"] for job in json.loads(status.stdout)["jobs"]} == {trace_id}


def test_with_no_configuration_nothing_is_printed_or_sent_and_the_run_keeps_its_trace(
        workdir: Path) -> None:
    run_id, done = _render(workdir)
    assert done.stdout.count("\n") == 1 and "trace" not in done.stdout.lower()
    assert "span" not in done.stderr.lower() and "{" not in done.stderr
    spans = _stored(workdir, run_id)
    check_run_shape(spans, check_one_tree(spans), frames=FRAMES, per_job=PER_JOB)
    assert not (workdir / "framefarm-data" / "runs" / run_id / "trace").exists() or not any(
        (workdir / "framefarm-data" / "runs" / run_id / "trace").iterdir())

    shown = run_cli("trace", run_id, cwd=workdir)
    assert shown.returncode == 0, shown.stderr
    assert "critical path: plan →" in shown.stdout and "→ encode" in shown.stdout
    report = json.loads(run_cli("trace", run_id, "--json", cwd=workdir).stdout)
    path = report["critical_path"]["jobs"]
    assert path[0] == "plan" and path[-1] == "encode" and len(path) >= 3
    assert report["slowest_frame"]["frame"] in range(FRAMES)
    assert report["breakdown"]["render"] > 0 and report["breakdown"]["encode"] > 0


def test_console_exporter_writes_spans_to_stderr_only(workdir: Path) -> None:
    run_id, done = _render(workdir, {"OTEL_TRACES_EXPORTER": "console"})
    assert done.stdout.startswith(f"run {run_id}:") and done.stdout.count("\n") == 1
    assert '"name": "render"' in done.stderr and '"name": "run"' in done.stderr


def test_tracing_can_be_turned_off(workdir: Path) -> None:
    run_id, _ = _render(workdir, {"OTEL_SDK_DISABLED": "true"})
    assert not (workdir / "framefarm-data" / "runs" / run_id / "trace.jsonl").exists()
    status = json.loads(run_cli("status", run_id, "--json", cwd=workdir).stdout)
    assert {job["trace_id"] for job in status["jobs"]} == {""}
    assert status["status"] == "SUCCEEDED"


@pytest.mark.parametrize(("name", "value"), [("OTEL_TRACES_EXPORTER", "zipkin"),
                                             ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")])
def test_a_bad_tracing_setting_is_one_line_and_exit_2(workdir: Path, name: str, value: str) -> None:
    env = {name: value}
    if name == "OTEL_EXPORTER_OTLP_PROTOCOL":
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:4318"
    done = run_cli("render", str(EXAMPLES / "plasma.py"), "-o", "out.mp4", *SMALL, cwd=workdir,
                   env=env)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and name in done.stderr and "Traceback" not in done.stderr
    assert not (workdir / "out.mp4").exists()


def test_a_collector_that_is_down_does_not_fail_the_run(workdir: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run_id, done = _render(workdir, {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"})
    lines = [line for line in done.stderr.splitlines() if "could not export" in line]
    assert lines and all(f"127.0.0.1:{port}" in line for line in lines)
    assert "Traceback" not in done.stderr
    spans = _stored(workdir, run_id)
    check_run_shape(spans, check_one_tree(spans), frames=FRAMES, per_job=PER_JOB)


def _job(workdir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items()
            if not k.startswith(("FRAMEFARM_", "OTEL_", "TRACEPARENT", "_X_AMZN"))}
    full.update({"JOB_TYPE": "plan", "FRAMEFARM_SKETCH": str(EXAMPLES / "plasma.py"),
                 "TOTAL_FRAMES": "12", "FRAMEFARM_WIDTH": "160", "FRAMEFARM_HEIGHT": "90", **env})
    return subprocess.run([*framefarm_command(), "job"], cwd=workdir, env=full, text=True,
                          capture_output=True, timeout=120, check=False)


@pytest.mark.parametrize("carrier", ["TRACEPARENT", "_X_AMZN_TRACE_ID"])
def test_framefarm_job_joins_the_trace_it_is_given(workdir: Path, carrier: str) -> None:
    trace_id, parent = f"{int(time.time()):08x}" + "ab" * 12, "cd" * 8
    value = (f"00-{trace_id}-{parent}-01" if carrier == "TRACEPARENT"
             else f"Root=1-{trace_id[:8]}-{trace_id[8:]};Parent={parent};Sampled=1")
    done = _job(workdir, {carrier: value})
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip()
    plan = [s for s in _stored_parts(workdir, run_id) if s["name"] == "plan"]
    assert len(plan) == 1
    assert (plan[0]["trace_id"], plan[0]["parent_id"]) == (trace_id, parent)
    status = json.loads(run_cli("status", run_id, "--json", cwd=workdir).stdout)
    assert [job["trace_id"] for job in status["jobs"]] == [trace_id]


def test_an_unreadable_trace_context_starts_a_new_trace(workdir: Path) -> None:
    done = _job(workdir, {"TRACEPARENT": "not-a-traceparent"})
    assert done.returncode == 0, done.stderr
    plan = [s for s in _stored_parts(workdir, done.stdout.strip()) if s["name"] == "plan"]
    assert len(plan) == 1 and plan[0]["parent_id"] is None and len(plan[0]["trace_id"]) == 32


def _stored_parts(workdir: Path, run_id: str) -> list[dict[str, Any]]:
    """A plan job's spans, not yet merged (the encode job merges)."""
    folder = workdir / "framefarm-data" / "runs" / run_id / "trace"
    return [json.loads(line) for part in sorted(folder.glob("*.jsonl"))
            for line in part.read_text().splitlines()]
