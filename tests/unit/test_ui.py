"""`framefarm ui` on job logs made record by record (real SQLite files): the guards (token,
origin, Host, methods), run ids and keys from URLs, a run of 10,000 chunks, runs with odd
records, a job log that cannot be read, byte ranges, and the command's bad input."""

from __future__ import annotations

import socket
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the ui extra is not installed: pip install -e '.[ui]'")

with warnings.catch_warnings():  # Starlette 1.x would rather have httpx2; either works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from framefarm.joblog import JobLog, open_joblog
from framefarm.model import RunRecord
from framefarm.report import load_report
from framefarm.ui._media import Unsatisfiable, byte_range
from framefarm.ui._views import GRID_CELLS, chunk_grid
from framefarm.ui.app import TOKEN_HEADER, Settings, create_app
from tests.conftest import run_cli

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

TOKEN = "test-token-123"
ORIGIN = "http://testserver"


def plan(run_id: str, *, frames: int, per_job: int) -> dict[str, Any]:
    return {"run_id": run_id, "total_frames": frames, "frames_per_job": per_job,
            "size": -(-frames // per_job), "sketch": "file:///d/sketches/" + "ab" * 32 + ".py",
            "sketch_name": "/home/me/wave.py", "output": f"/home/me/{run_id}.mp4",
            "video": {"width": 64, "height": 48, "fps": "30", "crf": 18, "preset": "fast"}}


@pytest.fixture
def joblog(tmp_path: Path) -> Iterator[JobLog]:
    log = open_joblog(f"sqlite:///{tmp_path}/log.db")
    yield log
    log.close()


@pytest.fixture
def client(tmp_path: Path, joblog: JobLog) -> Iterator[TestClient]:
    app = create_app(Settings(storage_url=(tmp_path / "data").as_uri(), joblog_url=joblog.url,
                              token=TOKEN, hosts=frozenset({"testserver"}), poll_seconds=0.05,
                              cache=tmp_path / "cache"))
    with TestClient(app) as test_client:
        yield test_client


def add_run(joblog: JobLog, run_id: str, *, frames: int = 20, per_job: int = 5,
            created: str = "2026-01-01T00:00:00.000Z", **fields: Any) -> RunRecord:
    run = RunRecord(run_id=run_id, created_at=created, runner="local",
                    plan=plan(run_id, frames=frames, per_job=per_job), **fields)
    joblog.put_run(run)
    return run


# -- guards ---------------------------------------------------------------------------------------

def test_a_state_change_needs_the_token_and_the_same_origin(client: TestClient,
                                                            joblog: JobLog) -> None:
    add_run(joblog, "r1")
    joblog.start_job(run_id="r1", kind="plan", status="SUCCEEDED", attempt=1)
    url = "/api/runs/r1/cancel"
    assert client.post(url).status_code == 403
    refused = client.post(url, headers={TOKEN_HEADER: "wrong"})
    assert refused.status_code == 403 and "token" in refused.json()["error"]
    other = client.post(url, headers={TOKEN_HEADER: TOKEN, "Origin": "http://evil.example"})
    assert other.status_code == 403 and "cross-origin" in other.json()["error"]
    site = client.post(url, headers={TOKEN_HEADER: TOKEN, "Sec-Fetch-Site": "cross-site"})
    assert site.status_code == 403
    assert client.get(url).status_code == 405  # never a GET
    assert joblog.get_run("r1").cancelled_at == ""  # type: ignore[union-attr]  # none got through

    done = client.post(url, headers={TOKEN_HEADER: TOKEN, "Origin": ORIGIN})
    assert done.status_code == 200, done.text
    assert "r1: CANCELLED" in done.json()["message"]
    assert joblog.get_run("r1").cancelled_at  # type: ignore[union-attr]
    assert client.get("/api/runs/r1").json()["status"] == "CANCELLED"


def test_an_unknown_host_is_refused_even_for_reading(client: TestClient) -> None:
    """A page of another site whose name resolves here (DNS rebinding) reads nothing."""
    assert client.get("/api/runs", headers={"Host": "evil.example:8765"}).status_code == 403
    assert client.get("/api/runs").status_code == 200


def test_the_page_carries_the_token_for_its_own_requests(client: TestClient, joblog: JobLog) -> None:
    add_run(joblog, "r1")
    for url in ("/", "/runs/r1", "/runs/r1/chunks/0"):
        page = client.get(url)
        assert page.status_code == 200
        assert f'<meta name="framefarm-token" content="{TOKEN}">' in page.text
        assert page.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("url", [
    "/api/runs/..%2F..%2Fetc%2Fpasswd", "/api/runs/..%2F..%2Fetc/video", "/api/runs/%2Fetc%2Fpasswd/video",
    "/api/runs/../../etc/passwd", "/api/runs/.hidden/video", "/runs/..%2Fx", "/api/runs/a%00b",
    "/static/..%2F_views.py", "/static/../app.py", "/static/%2e%2e/app.py", "/static//etc/passwd",
    "/api/runs/r1/chunks/-1", "/api/runs/r1/chunks/..%2F..%2Fplan.json",
    "/api/runs/r1/preview?chunk=..%2F..%2Fplan.json",
])
def test_urls_never_reach_outside_storage(client: TestClient, joblog: JobLog, tmp_path: Path,
                                          url: str) -> None:
    add_run(joblog, "r1")
    (tmp_path / "data").mkdir()
    (tmp_path / "secret.txt").write_text("secret")
    found = client.get(url)
    assert found.status_code == 404, (url, found.status_code, found.text[:200])
    assert "secret" not in found.text and "import" not in found.text


def test_static_files_are_served(client: TestClient) -> None:
    script = client.get("/static/run.js")
    assert script.status_code == 200 and "EventSource" in script.text
    assert "http://" not in client.get("/static/common.js").text  # nothing from the network


# -- odd and huge runs -----------------------------------------------------------------------------

def test_a_run_of_10000_chunks_renders_fast_and_bounded(client: TestClient, joblog: JobLog) -> None:
    add_run(joblog, "huge", frames=20_000, per_job=2)
    for i in range(10_000):
        status = "FAILED" if i % 1000 == 7 else "RUNNING" if i >= 9_990 else "SUCCEEDED"
        joblog.start_job(run_id="huge", kind="render", index=i, attempt=1, status=status,
                         frames=2 if status == "SUCCEEDED" else 1,
                         error="boom\nTraceback (most recent call last):\n  ..."
                         if status == "FAILED" else "")
    for url, most in (("/runs/huge", 20_000), ("/api/runs/huge?jobs=0", 200_000),
                      ("/api/runs/huge/jobs?limit=100", 100_000), ("/api/runs", 20_000)):
        began = time.perf_counter()
        page = client.get(url)
        took = time.perf_counter() - began
        assert page.status_code == 200, page.text
        assert took < 2.0, f"{url} took {took:.2f} s"
        assert len(page.content) < most, f"{url} is {len(page.content)} bytes"
    run = client.get("/api/runs/huge?jobs=0").json()
    assert "jobs" not in run and run["jobs_total"] == 10_000
    grid = run["grid"]
    assert (grid["chunks"], grid["per_cell"], len(grid["cells"])) == (10_000, 1, 10_000)
    assert grid["cells"].count("f") == 10 and grid["cells"].count("r") == 10
    assert grid["cells"][7] == "f" and grid["cells"][9_995] == "r"
    assert run["chunk_states"] == {"SUCCEEDED": 9_980, "RUNNING": 10, "QUEUED": 0, "FAILED": 10,
                                   "CANCELLED": 0, "WAITING": 0}
    assert run["failed_total"] == 10 and "Traceback" in run["failed"][0]["error"]
    page = client.get("/api/runs/huge/jobs?offset=9990&limit=100&status=RUNNING").json()
    assert page["total"] == 10 and page["jobs"] == []
    page = client.get("/api/runs/huge/jobs?offset=9990&limit=100").json()
    assert [j["index"] for j in page["jobs"]] == list(range(9_990, 10_000))
    # the full report is status --json's, every job in it
    full = client.get("/api/runs/huge").json()
    assert len(full["jobs"]) == 10_000


def test_a_grid_above_its_cells_summarises_ranges_least_done_first() -> None:
    chunks = GRID_CELLS * 3 + 1
    latest = {f"render:{i}": {"kind": "render", "index": i, "status": "SUCCEEDED"} for i in range(chunks)}
    latest["render:4"] = {"kind": "render", "index": 4, "status": "FAILED"}
    latest["render:30000"] = {"kind": "render", "index": 30000, "status": "RUNNING"}
    del latest["render:29999"]
    grid = chunk_grid(latest, {4: 3}, chunks)
    assert grid["per_cell"] == 4 and len(grid["cells"]) == -(-chunks // 4)
    assert grid["cells"][1] == "f"  # chunks 4..7: one failed
    assert grid["cells"][7499] == "."  # 29996..29999: one not started
    assert grid["cells"][7500] == "r"
    assert set(grid["cells"][2:7499]) == {"s"} and grid["retried"] == {"4": 3}


def test_runs_with_odd_records_render(client: TestClient, joblog: JobLog,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    # failed in plan: no plan in its record
    joblog.put_run(RunRecord(run_id="noplan", created_at="2026-01-02T00:00:00.000Z", runner="local"))
    joblog.start_job(run_id="noplan", kind="plan", attempt=1, status="FAILED",
                     error="sketch.py: no render(ctx) function")
    # jobs but no run record at all
    joblog.start_job(run_id="orphan", kind="render", index=0, attempt=1, status="SUCCEEDED")
    # still RUNNING, an attempt without a heartbeat for an hour on another host
    add_run(joblog, "stuck", created="2026-01-03T00:00:00.000Z", runner_ids={"render": "job-1"})
    joblog.start_job(run_id="stuck", kind="render", index=1, attempt=1, status="RUNNING",
                     host="elsewhere", started_at="2026-01-03T00:00:00.000Z")
    runs = client.get("/api/runs").json()
    assert [r["run_id"] for r in runs["runs"]] == ["stuck", "noplan"]  # newest first
    by_id = {r["run_id"]: r for r in runs["runs"]}
    assert by_id["noplan"]["status"] == "FAILED" and by_id["noplan"]["chunks"] is None
    for run_id in ("noplan", "orphan", "stuck"):
        assert client.get(f"/runs/{run_id}").status_code == 200
        report = client.get(f"/api/runs/{run_id}").json()
        status = load_report(joblog, run_id)
        assert status is not None
        assert {k: report[k] for k in status} == status  # status --json's own fields
    stuck = client.get("/api/runs/stuck?jobs=0").json()
    assert stuck["status"] == "FAILED"  # the lost attempt shows FAILED, as status says
    assert "lost" in stuck["failed"][0]["error"]
    assert stuck["links"] == [{"label": "AWS Batch render job", "text": "job-1", "url": ""}]
    assert client.get("/api/runs/noplan?jobs=0").json()["grid"]["cells"] == ""
    assert client.get("/api/runs/noplan/chunks/0").status_code == 404
    assert client.get("/api/runs/nosuch").status_code == 404
    assert client.get("/api/runs/noplan/video").status_code == 404
    assert client.get("/api/runs/noplan/preview").status_code == 404
    assert client.get("/api/runs/noplan/trace").json()["spans"] == 0


def test_filter_and_pages(client: TestClient, joblog: JobLog) -> None:
    for i in range(30):
        add_run(joblog, f"run{i:02d}", created=f"2026-01-01T00:00:{i:02d}.000Z")
        joblog.start_job(run_id=f"run{i:02d}", kind="plan", attempt=1, status="SUCCEEDED")
        if i % 3 == 0:
            joblog.mark_cancelled(f"run{i:02d}")
    first = client.get("/api/runs?limit=25").json()
    assert first["total"] == 30 and len(first["runs"]) == 25 and first["runs"][0]["run_id"] == "run29"
    second = client.get("/api/runs?limit=25&offset=25").json()
    assert [r["run_id"] for r in second["runs"]] == [f"run{i:02d}" for i in range(4, -1, -1)]
    cancelled = client.get("/api/runs?status=cancelled").json()
    assert cancelled["total"] == 10 and {r["status"] for r in cancelled["runs"]} == {"CANCELLED"}
    assert client.get("/api/runs?status=nonsense").status_code == 400
    assert client.get("/api/runs?offset=x").status_code == 400


def test_no_job_log_yet_is_no_runs(tmp_path: Path) -> None:
    app = create_app(Settings(storage_url=(tmp_path / "d").as_uri(), token=TOKEN,
                              joblog_url=f"sqlite:///{tmp_path}/none/log.db",
                              hosts=frozenset({"testserver"}), cache=tmp_path / "c"))
    with TestClient(app) as client:
        assert client.get("/api/runs").json()["total"] == 0
        assert client.get("/").status_code == 200
    assert not (tmp_path / "none").exists()  # looking made nothing


def test_a_job_log_that_cannot_be_read_is_a_banner_not_a_traceback(tmp_path: Path) -> None:
    broken = tmp_path / "log.db"
    broken.write_bytes(b"this is no SQLite database, just text\n" * 200)
    app = create_app(Settings(storage_url=(tmp_path / "d").as_uri(), joblog_url=f"sqlite:///{broken}",
                              token=TOKEN, hosts=frozenset({"testserver"}), cache=tmp_path / "c"))
    with TestClient(app, raise_server_exceptions=False) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert "The job log cannot be read" in page.text and "Traceback" not in page.text
        for url in ("/api/runs", "/api/runs/r1", "/api/runs/r1/jobs"):
            failed = client.get(url)
            assert failed.status_code == 503, (url, failed.text)
            error = failed.json()["error"]
            assert str(broken) in error and "\n" not in error and "Traceback" not in error


def test_a_dynamodb_job_log_out_of_reach_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("boto3")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_REGION": "us-east-1",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_MAX_ATTEMPTS": "1",
                        "AWS_RETRY_MODE": "standard"}.items():
        monkeypatch.setenv(name, value)
    from framefarm import _aws

    monkeypatch.setattr(_aws, "MAX_ATTEMPTS", 1)  # refused at once: no backoff to wait through
    _aws.reset()
    try:
        app = create_app(Settings(storage_url=(tmp_path / "d").as_uri(), joblog_url="dynamodb://ff-log",
                                  token=TOKEN, hosts=frozenset({"testserver"}), cache=tmp_path / "c"))
        with TestClient(app, raise_server_exceptions=False) as client:
            failed = client.get("/api/runs")
            assert failed.status_code == 503, failed.text
            error = failed.json()["error"]
            assert "dynamodb://ff-log" in error and "\n" not in error and "Traceback" not in error
            page = client.get("/")
            assert page.status_code == 200 and "The job log cannot be read" in page.text
    finally:
        _aws.reset()


# -- byte ranges ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("header", "expected"), [
    (None, None), ("", None), ("bytes=0-99", (0, 99)), ("bytes=100-", (100, 999)),
    ("bytes=-100", (900, 999)), ("bytes=-5000", (0, 999)), ("bytes=990-5000", (990, 999)),
    ("bytes=0-0", (0, 0)), ("items=0-5", None), ("bytes=0-1,5-6", None), ("bytes=-", None),
])
def test_byte_ranges(header: str | None, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=2000-3000", "bytes=-0", "bytes=50-10"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(Unsatisfiable):
        byte_range(header, 1000)


# -- the command ------------------------------------------------------------------------------------

def test_bad_input_is_one_line(workdir: Path) -> None:
    for args, words in ((("--port", "70000"), "must be 0 to 65535"),
                        (("--port", "http"), "is not a port number"),
                        (("--host", "no.such.host.invalid"), "--host 'no.such.host.invalid'"),
                        (("--storage", "nope://x"), "unknown storage URL 'nope://x'"),
                        (("--joblog", "nope://x"), "unknown job log URL 'nope://x'")):
        done = run_cli("ui", *args, cwd=workdir, timeout=30)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert words in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (workdir / "framefarm-data").exists()


def test_a_port_in_use_is_one_line(workdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli("ui", "--port", str(port), cwd=workdir, timeout=30)
    assert done.returncode == 2
    assert f"port {port} on 127.0.0.1 is in use" in done.stderr and "--port" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_without_the_ui_extra_the_command_names_the_fix(workdir: Path, tmp_path: Path) -> None:
    """Starlette hidden from the interpreter: the one line says which extra to install."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\nclass Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('starlette', 'uvicorn'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n")
    done = run_cli("ui", cwd=workdir, env={"PYTHONPATH": str(blocker)}, timeout=30)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == ("framefarm: framefarm ui needs an optional dependency: "
                                   "pip install 'framefarm[ui]'")


def test_help_names_the_command() -> None:
    from framefarm.cli import build_parser

    text = build_parser().format_help()
    assert "ui}" in text


def test_batch_job_ids_link_to_the_console_of_the_configured_region(
        client: TestClient, joblog: JobLog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    add_run(joblog, "onbatch", runner_ids={"plan": "p-1", "render": "r-2"})
    links = client.get("/api/runs/onbatch?jobs=0").json()["links"]
    assert [(link["label"], link["text"]) for link in links] == [("AWS Batch plan job", "p-1"),
                                                                 ("AWS Batch render job", "r-2")]
    assert links[1]["url"] == ("https://eu-west-1.console.aws.amazon.com/batch/home?"
                               "region=eu-west-1#jobs/detail/r-2")


def test_the_pages_scripts_and_styles_ship_in_the_package() -> None:
    import re
    import tomllib

    from framefarm.ui.app import STATIC

    root = Path(__file__).resolve().parents[2]
    settings = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert settings["package-data"]["framefarm.ui"] == ["static/*"]
    for page in ("runs.html", "run.html", "chunk.html"):
        text = (STATIC / page).read_text()
        used = re.findall(r'(?:src|href)="/static/([^"]+)"', text)
        assert used and all((STATIC / name).is_file() for name in used), (page, used)
        assert "http://" not in text and "https://" not in text  # nothing from the network


def test_bound_beyond_this_machine_it_warns(workdir: Path) -> None:
    import os
    import select
    import signal
    import subprocess

    from tests.conftest import framefarm_command

    process = subprocess.Popen([*framefarm_command(), "ui", "--host", "0.0.0.0", "--port", "0"],
                               cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    try:
        said = b""
        deadline = time.monotonic() + 30
        assert process.stdout is not None
        while b"token" not in said and time.monotonic() < deadline and process.poll() is None:
            if select.select([process.stdout], [], [], 1)[0]:
                said += os.read(process.stdout.fileno(), 4096)
        assert b"http://0.0.0.0:" in said and b"token " in said, said
        port = said.split(b"http://0.0.0.0:", 1)[1].split(b"/", 1)[0].decode()
        import urllib.request

        def answers() -> bool:  # once it serves, Ctrl-C is uvicorn's to handle
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs", timeout=5) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        while not answers():
            assert time.monotonic() < deadline, "framefarm ui never answered"
            time.sleep(0.1)
    finally:
        os.kill(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=20)
    assert process.returncode == 0
    assert b"warning: listening on 0.0.0.0, not only this machine" in err, err


def test_a_big_runs_waterfall_is_folded_as_framefarm_trace_folds_it() -> None:
    """301 render attempts: the failed one, its retry and the slowest are drawn one by one, the
    rest counted in the density bar; nothing is lost between the two."""
    from framefarm.ui._views import trace_view
    from tests.unit.test_trace_report import many_chunks

    view = trace_view(many_chunks(), "")
    drawn = [j for j in view["jobs"] if j["kind"] == "render"]
    assert view["render_attempts"] == 301 and 0 < len(drawn) <= 12
    assert {(j["chunk"], j["attempt"]) for j in drawn} >= {(7, 1), (7, 2), (123, 1)}
    assert view["folded"] is not None and view["folded"]["count"] == 301 - len(drawn)
    assert max(view["folded"]["bins"]) > 0
