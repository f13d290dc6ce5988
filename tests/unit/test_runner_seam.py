"""The runner seam: what backends can reach, what a runner refuses, the hook a Batch plan job
gets, what `status` asks a run's runner, and the remote runners' shared staging."""

from __future__ import annotations

from pathlib import Path

import pytest

from framefarm import joblog, storage
from framefarm.errors import UserError
from framefarm.model import RunRecord
from framefarm.runners import plan_hook, runner_class, runner_job_statuses
from framefarm.runners._remote import fetch_output, stage_sketch, take_local_output
from framefarm.storage import open_storage


def test_each_backend_says_who_can_reach_it() -> None:
    assert [storage.url_reach(u) for u in ("memory://a", "file:///data", "framefarm-data",
                                           "s3://bucket/p")] == [
        "process", "machine", "machine", "anywhere"]
    assert [joblog.url_reach(u) for u in ("memory://a", "sqlite:///j.db", "j.db",
                                          "dynamodb://table")] == [
        "process", "machine", "machine", "anywhere"]
    assert storage.reaches("anywhere", "machine") and storage.reaches("machine", "machine")
    assert not storage.reaches("process", "machine")
    assert not storage.reaches("machine", "anywhere")


def test_a_runner_refuses_backends_its_jobs_cannot_reach_in_one_line() -> None:
    local, batch = runner_class("local"), runner_class("batch")
    local.check_backends("file:///d", "sqlite:///j.db")  # worker processes share the machine
    with pytest.raises(UserError) as refused:
        local.check_backends("memory://d", "sqlite:///j.db")
    assert str(refused.value) == (
        "memory:// storage and job logs live in one process; local worker processes cannot share "
        "them: use file:// and sqlite:/// (the defaults)")
    batch.check_backends("s3://bucket/p", "dynamodb://table")
    with pytest.raises(UserError) as refused:
        batch.check_backends("file:///d", "dynamodb://table")
    assert str(refused.value).startswith("AWS Batch containers cannot reach file:///d: use ")
    with pytest.raises(UserError) as refused:
        batch.check_backends("s3://bucket/p", "j.db")
    assert "cannot reach j.db:" in str(refused.value)


def test_only_a_batch_plan_container_gets_the_submission_hook() -> None:
    assert plan_hook({"JOB_TYPE": "plan"}) is None  # local, Temporal, a plain container
    with pytest.raises(UserError, match="FRAMEFARM_JOB_QUEUE is set but"):
        plan_hook({"FRAMEFARM_JOB_QUEUE": "q"})  # named where, not with what: bad input
    hook = plan_hook({"FRAMEFARM_JOB_QUEUE": "q", "FRAMEFARM_RENDER_JOB_DEFINITION": "r",
                      "FRAMEFARM_ENCODE_JOB_DEFINITION": "e"})
    assert callable(hook)


def test_each_runner_tells_the_plan_its_start_cost_and_its_chunk_limit() -> None:
    batch = runner_class("batch")
    assert batch.max_chunks == 10_000  # an AWS Batch array job's children
    assert runner_class("local").max_chunks == 0 and runner_class("temporal").max_chunks == 0
    local = runner_class("local")(workers=2)
    assert local.sizing_env() == {"FRAMEFARM_JOB_START_SECONDS": "0.005"}
    assert batch.sizing_env(batch.__new__(batch)) == {  # type: ignore[arg-type]
        "FRAMEFARM_JOB_START_SECONDS": "20.0", "FRAMEFARM_MAX_CHUNKS": "10000"}


def test_status_asks_only_the_runner_that_recorded_ids_of_its_own() -> None:
    # No ids: nothing to ask (and no AWS call is made).
    assert runner_job_statuses(RunRecord(run_id="r", created_at="t", runner="batch")) == {}
    # A runner without a view of its own says nothing beyond the job log, ids or not.
    temporal = RunRecord(run_id="r", created_at="t", runner="temporal", runner_ids={"render": "x"})
    assert runner_job_statuses(temporal) == {}


def test_remote_runners_stage_a_local_sketch_and_bring_the_video_back(tmp_path: Path) -> None:
    store = open_storage(f"memory://seam-{tmp_path.name}")
    sketch = tmp_path / "s.py"
    sketch.write_text("def render(ctx):\n    return None\n")
    env = {"FRAMEFARM_SKETCH": str(sketch), "FRAMEFARM_OUTPUT": str(tmp_path / "v.mp4")}
    stage_sketch(env, store)
    assert env["FRAMEFARM_SKETCH"].startswith("memory://") and "/sketches/" in env[
        "FRAMEFARM_SKETCH"]
    assert [k for k in store.list("sketches/")] == [env["FRAMEFARM_SKETCH"].split("/", 3)[3]]
    for kept in ("framefarm.examples.plasma:render", "s3://b/sketches/x.py"):
        named = {"FRAMEFARM_SKETCH": kept}
        stage_sketch(named, store)
        assert named == {"FRAMEFARM_SKETCH": kept}
    assert take_local_output(env) == str(tmp_path / "v.mp4") and "FRAMEFARM_OUTPUT" not in env
    remote = {"FRAMEFARM_OUTPUT": "s3://b/out.mp4"}
    assert take_local_output(remote) == "" and remote == {"FRAMEFARM_OUTPUT": "s3://b/out.mp4"}
    store.put_bytes("runs/r1/output.mp4", b"video bytes")
    fetch_output(store, "r1", str(tmp_path / "v.mp4"))
    assert (tmp_path / "v.mp4").read_bytes() == b"video bytes"
    fetch_output(store, "r1", "")  # nothing named: nothing fetched
    # A sketch with assets goes as one bundle, beside its files, and the list with it.
    (tmp_path / "tex").mkdir()
    (tmp_path / "tex" / "a.png").write_bytes(b"png")
    bundled = {"FRAMEFARM_SKETCH": str(sketch), "FRAMEFARM_ASSETS": "tex"}
    stage_sketch(bundled, store)
    assert "FRAMEFARM_ASSETS" not in bundled
    prefix = bundled["FRAMEFARM_SKETCH"].split("/", 3)[3].rsplit("/", 1)[0]
    assert prefix.startswith("bundles/") and sorted(store.list(prefix + "/")) == [
        f"{prefix}/s.py", f"{prefix}/tex/a.png"]


def test_one_rule_says_what_a_sketch_location_names(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from framefarm._locations import sketch_location_kind

    assert sketch_location_kind("s3://bucket/sketches/a.py") == "url"
    assert sketch_location_kind("file:///art/a.py") == "url"
    assert sketch_location_kind("framefarm.examples.plasma:render") == "module"
    assert sketch_location_kind("art/spiral.py") == "file"  # missing or not, a path to a file
    monkeypatch.chdir(tmp_path)
    (tmp_path / "odd:name").write_text("def render(ctx):\n    return None\n")
    assert sketch_location_kind("odd:name") == "file"  # it exists: a file, not a module


def test_every_runner_counts_progress_from_the_job_log_the_same_way() -> None:
    from framefarm.model import JobRecord
    from framefarm.report import frames_done
    from framefarm.runners import Progress

    latest = [JobRecord(run_id="r", job="plan", kind="plan", status="SUCCEEDED"),
              JobRecord(run_id="r", job="render:0", kind="render", index=0, status="SUCCEEDED",
                        frames=10),
              JobRecord(run_id="r", job="render:1", kind="render", index=1, status="RUNNING",
                        frames=4),
              JobRecord(run_id="r", job="render:2", kind="render", index=2, attempt=2,
                        status="FAILED", frames=7)]
    progress = Progress.of("r", latest, total_frames=30, chunks=3, elapsed=1.5)
    assert progress == Progress(run_id="r", total_frames=30, frames_done=21, chunks=3,
                                chunks_done=1, elapsed=1.5)
    assert frames_done(latest) == progress.frames_done  # what `framefarm status` shows


def test_the_command_line_builds_from_light_fronts_and_each_runner_declares_its_flags() -> None:
    import subprocess
    import sys

    from framefarm.runners import runner_front
    from framefarm.runners.temporal.shared import DEFAULT_HEARTBEAT_SECONDS
    from framefarm.runners.temporal_front import DEFAULT_HEARTBEAT_HELP

    assert runner_front("batch").render_flags() == (
        "stack", "job_queue", "plan_job_definition", "render_job_definition",
        "encode_job_definition", "plan_here", "wait")
    assert runner_front("temporal").connection_flags() == (
        "temporal_address", "temporal_namespace", "task_queue")
    assert runner_front("local").render_flags() == ()
    assert DEFAULT_HEARTBEAT_HELP == DEFAULT_HEARTBEAT_SECONDS  # what --help says is so
    # Building the whole parser imports no runner's own module, no SDK and no pixels code.
    code = ("import sys, framefarm.cli as c; c.build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('boto3', 'temporalio', 'av', 'numpy') or m.startswith('framefarm.runners.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ("['framefarm.runners._front', 'framefarm.runners.batch_front', "
                                   "'framefarm.runners.stepfunctions_front', "
                                   "'framefarm.runners.temporal_front']")
