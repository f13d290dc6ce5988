"""`framefarm ui`'s API over real local runs, rendered by the real `framefarm render`: the run
as `framefarm status --json` prints it, the video in byte ranges (decoded), the preview against
the sketch's own pixels, a chunk's segment and frames, the trace as `framefarm trace` reads it,
storage without local files (memory://), a run in S3 and DynamoDB (moto over HTTP), cancel /
resume / delete on a run that renders, and the event stream of a rendering run, left mid-stream
by its client."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import av
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason="the ui extra is not installed: pip install -e '.[ui]'")

with warnings.catch_warnings():  # Starlette 1.x would rather have httpx2; either works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from framefarm.storage import open_storage
from framefarm.ui.app import TOKEN_HEADER, Settings, create_app
from tests.conftest import framefarm_command, psnr, run_cli

pytestmark = pytest.mark.integration
T = TypeVar("T")

W, H = 64, 48
TOKEN = "integration-token"
POST = {TOKEN_HEADER: TOKEN, "Origin": "http://testserver"}

SKETCH = """
    import os, time
    import numpy as np

    WIDTH, HEIGHT, FPS = 64, 48, 24

    def render(ctx):
        time.sleep(float(os.environ.get("SLOW", "0")))
        y, x = np.mgrid[0:ctx.height, 0:ctx.width]
        f = ctx.frame
        return np.dstack([128 + 100 * np.sin(x / 9 + f / 4), 128 + 100 * np.cos(y / 7 - f / 6),
                          np.full(x.shape, (f * 37) % 200 + 28)]).astype(np.uint8)
"""


def expected(frame: int) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    return np.dstack([128 + 100 * np.sin(x / 9 + frame / 4), 128 + 100 * np.cos(y / 7 - frame / 6),
                      np.full(x.shape, (frame * 37) % 200 + 28)]).astype(np.uint8)


def wait_until(check: Callable[[], T], timeout: float = 60, every: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(every)


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder with one finished run, `done` (48 frames in 6 chunks)."""
    folder = tmp_path_factory.mktemp("farm")
    (folder / "sketch.py").write_text(SKETCH.replace("\n    ", "\n"))
    done = run_cli("render", "sketch.py", "-o", "done.mp4", "--frames", "48", "--per-job", "8",
                   "--run-id", "done", "--workers", "2", cwd=folder)
    assert done.returncode == 0, done.stderr
    return folder


def settings(folder: Path, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "storage_url": (folder / "framefarm-data").as_uri(),
        "joblog_url": f"sqlite:///{folder}/framefarm-data/joblog.sqlite3", "token": TOKEN,
        "hosts": frozenset({"testserver"}), "poll_seconds": 0.1, "cache": folder / "ui-cache"}
    return Settings(**{**values, **changes})


@pytest.fixture
def client(farm: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings(farm))) as test_client:
        yield test_client


def test_a_run_is_what_status_json_says_plus_its_urls(client: TestClient, farm: Path) -> None:
    status = json.loads(run_cli("status", "done", "--json", cwd=farm).stdout)
    report = client.get("/api/runs/done").json()
    assert {k: report[k] for k in status} == status
    assert report["video_url"] == "/api/runs/done/video"
    assert report["preview_url"].startswith("/api/runs/done/preview?chunk=")
    plan = report["plan"]
    assert (plan["total_frames"], plan["frames_per_job"], plan["chunks"], plan["width"],
            plan["height"], plan["fps"]) == (48, 8, 6, W, H, "24")
    sketch = (farm / "sketch.py").read_bytes()
    assert plan["sketch_sha256"] == hashlib.sha256(sketch).hexdigest()
    assert plan["sketch_path"] == str(farm / "sketch.py")
    assert report["grid"]["cells"] == "ssssss" and report["chunk_states"]["SUCCEEDED"] == 6
    assert report["output_bytes"] == (farm / "framefarm-data/runs/done/output.mp4").stat().st_size
    runs = client.get("/api/runs").json()["runs"]
    cli_runs = json.loads(run_cli("runs", "--json", cwd=farm).stdout)
    mine = next(r for r in runs if r["run_id"] == "done")
    theirs = next(r for r in cli_runs if r["run_id"] == "done")
    assert {k: mine[k] for k in theirs} == theirs
    assert mine["frames_done"] == 48 and mine["sketch_name"] == "sketch.py"


def test_the_video_is_served_in_byte_ranges(client: TestClient, farm: Path) -> None:
    data = (farm / "framefarm-data/runs/done/output.mp4").read_bytes()
    size = len(data)
    whole = client.get("/api/runs/done/video")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(whole.content)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 48 and psnr(frames[30], expected(30)) > 30
    for header, first, last in (("bytes=0-99", 0, 99), (f"bytes={size // 2}-", size // 2, size - 1),
                                ("bytes=-200", size - 200, size - 1)):
        part = client.get("/api/runs/done/video", headers={"Range": header})
        assert part.status_code == 206, header
        assert part.headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert part.headers["content-length"] == str(last - first + 1)
        assert part.content == data[first:last + 1]
    head = client.head("/api/runs/done/video", headers={"Range": "bytes=10-19"})
    assert head.status_code == 206 and head.headers["content-length"] == "10" and head.content == b""
    beyond = client.get("/api/runs/done/video", headers={"Range": f"bytes={size}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{size}"


def test_the_preview_is_the_latest_chunks_first_frame(client: TestClient) -> None:
    report = client.get("/api/runs/done?jobs=0").json()
    newest = max((j for j in client.get("/api/runs/done/jobs?kind=render").json()["jobs"]),
                 key=lambda j: (j["stopped_at"], j["index"]))
    assert report["preview_chunk"]["index"] == newest["index"]
    picture = client.get(report["preview_url"])
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/jpeg"
    image = np.asarray(Image.open(io.BytesIO(picture.content)).convert("RGB"))
    first = newest["index"] * 8
    assert image.shape == (H, W, 3)
    assert psnr(image, expected(first)) > 25
    assert psnr(image, expected(first)) > psnr(image, expected(first + 3)) + 3
    again = client.get(report["preview_url"])  # kept: the same bytes, not decoded again
    assert again.content == picture.content
    other = client.get("/api/runs/done/preview?chunk=2")
    assert psnr(np.asarray(Image.open(io.BytesIO(other.content)).convert("RGB")), expected(16)) > 25
    assert client.get("/api/runs/done/preview?chunk=99").status_code == 404


def test_a_chunk_has_its_attempts_segment_and_slowest_frames(client: TestClient, farm: Path) -> None:
    chunk = client.get("/api/runs/done/chunks/3").json()
    assert (chunk["frame_start"], chunk["frame_stop"], chunk["frames"]) == (24, 32, 8)
    assert [(a["attempt"], a["status"], a["frames"]) for a in chunk["attempts"]] == [(1, "SUCCEEDED", 8)]
    segment = farm / "framefarm-data/runs/done/segments/00003.mp4"
    digest = hashlib.sha256(segment.read_bytes()).hexdigest()
    assert chunk["segment"] == {"key": "runs/done/segments/00003.mp4", "stored": True,
                                "bytes": segment.stat().st_size, "recorded_sha256": digest,
                                "stored_sha256": digest, "matches": True}
    frames = chunk["slowest_frames"]
    assert sorted(f["frame"] for f in frames) == list(range(24, 32))
    assert [f["seconds"] for f in frames] == sorted((f["seconds"] for f in frames), reverse=True)
    assert client.get("/api/runs/done/chunks/6").status_code == 404
    assert client.get("/runs/done/chunks/3").status_code == 200


def test_the_trace_is_what_framefarm_trace_reads(client: TestClient, farm: Path) -> None:
    theirs = json.loads(run_cli("trace", "done", "--json", cwd=farm).stdout)
    mine = client.get("/api/runs/done/trace").json()
    assert mine["wall_seconds"] == theirs["wall_seconds"] and mine["spans"] == theirs["spans"]
    assert [j["job"] for j in mine["jobs"]] == [j["job"] for j in theirs["jobs"]]
    assert mine["folded"] is None and mine["render_attempts"] == 6
    assert mine["critical_path"] == theirs["critical_path"]


def test_storage_without_local_files_is_served_through_its_backend(farm: Path) -> None:
    """memory:// has no local files, as s3:// has none: the video is copied once into the
    cache through Storage.get_file and served from there; the preview is read with get_bytes."""
    local = open_storage((farm / "framefarm-data").as_uri())
    remote = open_storage("memory://ui-remote")
    for key in local.list("runs/done/"):
        remote.put_bytes(key, local.get_bytes(key))
    data = local.get_bytes("runs/done/output.mp4")
    with TestClient(create_app(settings(farm, storage_url="memory://ui-remote"))) as client:
        report = client.get("/api/runs/done?jobs=0").json()
        assert report["video_url"] == "/api/runs/done/video" and report["output_bytes"] is None
        part = client.get("/api/runs/done/video", headers={"Range": "bytes=100-299"})
        assert part.status_code == 206 and part.content == data[100:300]
        assert (farm / "ui-cache/videos/done/output.mp4").read_bytes() == data
        picture = client.get(report["preview_url"])
        assert picture.status_code == 200 and picture.content[:2] == b"\xff\xd8"
        chunk = client.get("/api/runs/done/chunks/1").json()
        assert chunk["segment"]["stored"] and chunk["segment"]["matches"] is None


def start_render(folder: Path, run_id: str, *, frames: int, slow: float) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRAMEFARM_", "OTEL_"))}
    return subprocess.Popen(
        [*framefarm_command(), "render", "sketch.py", "-o", f"{run_id}.mp4", "--frames", str(frames),
         "--per-job", "10", "--run-id", run_id, "--workers", "2"],
        cwd=folder, env={**env, "SLOW": str(slow)}, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True)


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=30)


def test_cancel_resume_and_delete_a_rendering_run(client: TestClient, farm: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    render = start_render(farm, "steer", frames=400, slow=0.05)
    try:
        wait_until(lambda: (client.get("/api/runs/steer?jobs=0").json().get("frames_done") or 0) >= 10)
        assert client.get("/api/runs/steer?jobs=0").json()["driver"].startswith(f"pid {render.pid}")
        refused = client.post("/api/runs/steer/resume", headers=POST)  # the render holds it
        assert refused.status_code == 409 and "being rendered by" in refused.json()["message"]
        assert client.post("/api/runs/steer/delete?confirm=steer", headers=POST).status_code == 409

        cancelled = client.post("/api/runs/steer/cancel", headers=POST)
        assert cancelled.status_code == 200
        assert f"stopped its driver, pid {render.pid}" in cancelled.json()["message"]
        render.communicate(timeout=30)
        assert render.returncode == 130  # as `framefarm cancel` stops it
    finally:
        stop(render)
    assert json.loads(run_cli("status", "steer", "--json", cwd=farm).stdout)["status"] == "CANCELLED"
    report = client.get("/api/runs/steer?jobs=0").json()
    assert report["status"] == "CANCELLED" and report["video_url"] is None
    kept = report["chunk_states"]["SUCCEEDED"]

    monkeypatch.setenv("SLOW", "0")  # the resume command inherits the server's environment
    resumed = client.post("/api/runs/steer/resume", headers=POST)
    said = resumed.json()
    if resumed.status_code == 202:  # it took the run and renders (the usual case)
        assert said["message"] == f"resuming run steer: {40 - kept} of 40 chunks to render", said
    else:  # it was done before the request looked again
        assert resumed.status_code == 200 and "run steer: 400 frames" in said["message"], said
    wait_until(lambda: client.get("/api/runs/steer?jobs=0").json()["status"] == "SUCCEEDED", timeout=120)
    pid = resumed.json()["pid"]
    wait_until(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), timeout=30)
    video = client.get("/api/runs/steer/video")
    with av.open(io.BytesIO(video.content)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 400 and min(psnr(decoded[i], expected(i)) for i in (0, 199, 399)) > 30
    jobs = client.get("/api/runs/steer/jobs?kind=render&limit=1000").json()["jobs"]
    finished_first = {j["index"] for j in jobs if j["status"] == "SUCCEEDED" and j["attempt"] == 1}
    assert len(finished_first) >= kept  # what was kept was not rendered again

    assert client.post("/api/runs/steer/delete", headers=POST).status_code == 400  # no confirmation
    deleted = client.post("/api/runs/steer/delete?confirm=steer", headers=POST)
    assert deleted.status_code == 200 and "its job-log records are kept" in deleted.json()["message"]
    assert open_storage((farm / "framefarm-data").as_uri()).list("runs/steer/") == []
    assert client.get("/api/runs/steer/video").status_code == 404
    assert client.get("/api/runs/steer?jobs=0").json()["status"] == "SUCCEEDED"  # the job log's word
    assert (farm / "steer.mp4").is_file()  # the user's own copy is not storage's to delete


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def test_events_follow_a_rendering_run_and_survive_the_client_leaving(farm: Path) -> None:
    import uvicorn

    app = create_app(settings(farm, hosts=None))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    render = start_render(farm, "live", frames=240, slow=0.04)
    try:
        wait_until(lambda: server.started, timeout=20)
        wait_until(lambda: run_cli("status", "live", cwd=farm).returncode == 0, timeout=30)
        seen: list[int] = []
        for _ in range(3):  # leave mid-stream, three times over
            with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
                conn.sendall(f"GET /api/runs/live/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                             "Accept: text/event-stream\r\n\r\n".encode())
                buffer = b""
                while buffer.count(b"event: run") < 2:
                    chunk = conn.recv(65536)
                    assert chunk, "the stream ended"
                    buffer += chunk
                assert b"HTTP/1.1 200" in buffer and b"text/event-stream" in buffer
                for block in buffer.split(b"\n\n"):
                    if b"event: run" in block:
                        data = json.loads(block.split(b"data: ", 1)[1])
                        assert data["run_id"] == "live" and "jobs" not in data
                        seen.append(data["frames_done"])
                wait_until(lambda: app.app.state.farm.streams == 1, timeout=5)  # type: ignore[attr-defined]
            # the client went away: its stream ends, the server goes on
            wait_until(lambda: app.app.state.farm.streams == 0, timeout=10)  # type: ignore[attr-defined]
        assert len(set(seen)) >= 2, seen  # events came as the run changed
        assert render.wait(timeout=120) == 0
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs/live?jobs=0", timeout=20) as r:
            assert json.loads(r.read())["status"] == "SUCCEEDED"
    finally:
        stop(render)
        server.should_exit = True
        thread.join(timeout=20)
    assert not thread.is_alive()


def test_a_run_in_s3_and_dynamodb_is_served_from_there(
        workdir: Path, bucket: str, joblog_table: str) -> None:
    """Pointed at s3:// and dynamodb:// (boto3 over HTTP to the moto server), the view lists a
    run the real `framefarm render` made there, serves its video in byte ranges from S3 and its
    preview from the segment in S3, and its report is the one `framefarm status --json` prints."""
    (workdir / "sketch.py").write_text(SKETCH.replace("\n    ", "\n"))
    storage, joblog = f"s3://{bucket}/farm", f"dynamodb://{joblog_table}"
    where = ("--storage", storage, "--joblog", joblog)
    done = run_cli("render", "sketch.py", "-o", "cloud.mp4", "--frames", "20", "--per-job", "10",
                   "--run-id", "cloud", *where, cwd=workdir)
    assert done.returncode == 0, done.stderr
    status = run_cli("status", "cloud", "--json", "--joblog", joblog, cwd=workdir)
    assert status.returncode == 0, status.stderr
    data = open_storage(storage).get_bytes("runs/cloud/output.mp4")
    assert data == (workdir / "cloud.mp4").read_bytes()
    with TestClient(create_app(settings(workdir, storage_url=storage, joblog_url=joblog))) as client:
        listed = client.get("/api/runs").json()
        assert [r["run_id"] for r in listed["runs"]] == ["cloud"]
        assert listed["runs"][0]["status"] == "SUCCEEDED" and listed["runs"][0]["frames_done"] == 20
        report = client.get("/api/runs/cloud").json()
        theirs = json.loads(status.stdout)
        assert {k: report[k] for k in theirs} == theirs
        part = client.get(report["video_url"], headers={"Range": "bytes=1000-1999"})
        assert part.status_code == 206 and part.content == data[1000:2000]
        assert part.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
        picture = client.get(report["preview_url"])
        assert picture.status_code == 200 and picture.headers["content-type"] == "image/jpeg"
        image = np.asarray(Image.open(io.BytesIO(picture.content)).convert("RGB"))
        first = report["preview_chunk"]["index"] * 10
        assert image.shape == (H, W, 3) and psnr(image, expected(first)) > 25
