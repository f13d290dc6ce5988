"""`framefarm trace RUN`: the report built from a run's stored spans, and the command that prints it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from framefarm.cli import main
from framefarm.storage import open_storage
from framefarm.trace_report import build_report, render_text


class Trace:
    """Synthetic spans in the stored format (times in seconds from 1000)."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []

    def add(self, name: str, start: float, end: float, parent: str | None = None, *,
            status: str = "UNSET", host: str = "", **attributes: Any) -> str:
        span_id = f"{len(self.spans) + 1:016x}"
        attrs = {f"framefarm.{k}": v for k, v in attributes.items()}
        if host:
            attrs["host.name"] = host
        self.spans.append({"trace_id": "ab" * 16, "span_id": span_id, "parent_id": parent, "name": name,
                           "kind": "INTERNAL", "start": 1000 + start, "end": 1000 + end, "status": status,
                           "attributes": attrs, "resource": {"service.name": "framefarm"}})
        return span_id

    def job(self, name: str, start: float, end: float, parent: str, *, attempt: int = 1,
            status: str = "OK", host: str = "h", chunk: int | None = None,
            frames: tuple[int, int] | None = None) -> str:
        kind = name.partition(":")[0]
        extra: dict[str, Any] = {"job": name, "attempt": attempt, "run_id": "r1"}
        if chunk is not None:
            extra["chunk"] = chunk
        if frames is not None:
            extra["frame_start"], extra["frame_stop"] = frames
        return self.add(kind, start, end, parent, status=status, host=host, **extra)

    def frame(self, parent: str, frame: int, start: float, end: float, render: float, encode: float) -> None:
        self.add("frame", start, end, parent, frame=frame, render_seconds=render, encode_seconds=encode)

    def call(self, name: str, start: float, end: float, parent: str, aws: str) -> None:
        """A storage or job-log call with botocore's client span inside it."""
        self.add(aws, start + 0.01, end - 0.01, self.add(name, start, end, parent))


def batch_run() -> list[dict[str, Any]]:
    """A run on AWS Batch: queue waits between jobs, chunk 1 fails once and is retried."""
    t = Trace()
    run = t.add("run", 0, 20, run_id="r1")
    plan = t.job("plan", 1, 2, run, host="a")
    t.call("joblog.update_job", 1.1, 1.2, plan, "DynamoDB.UpdateItem")
    t.call("storage.put_bytes", 1.5, 1.6, plan, "S3.PutObject")
    r0 = t.job("render:0", 4, 9, run, chunk=0, frames=(0, 3), host="b")
    t.frame(r0, 0, 4.5, 5.5, 0.8, 0.2)
    t.frame(r0, 1, 5.5, 6.5, 0.8, 0.2)
    t.frame(r0, 2, 6.5, 8.0, 1.2, 0.3)
    t.call("storage.put_file", 8.2, 8.7, r0, "S3.PutObject")
    r1 = t.job("render:1", 5, 12, run, chunk=1, frames=(3, 6), status="ERROR", host="c")
    t.frame(r1, 3, 5.5, 6.0, 0.4, 0.1)
    r1b = t.job("render:1", 13, 16, run, chunk=1, frames=(3, 6), attempt=2, host="d")
    for i, at in enumerate((13.2, 14.0, 14.8)):
        t.frame(r1b, 3 + i, at, at + 0.8, 0.7, 0.1)
    t.add("flush", 15.6, 15.9, r1b)  # x264's held-back frames
    r2 = t.job("render:2", 3, 8, run, chunk=2, frames=(6, 9), host="e")
    t.frame(r2, 6, 3.5, 4.5, 0.9, 0.1)
    encode = t.job("encode", 18, 19.5, run, host="f")
    concat = t.add("concat", 18.1, 18.9, encode)
    t.call("storage.get_file", 18.2, 18.5, concat, "S3.GetObject")
    t.add("verify", 18.9, 19.2, encode)
    t.call("joblog.update_job", 19.3, 19.4, encode, "DynamoDB.UpdateItem")
    return t.spans


def test_wall_time_and_waterfall() -> None:
    report = build_report(batch_run())
    assert report["run_id"] == "r1"
    assert report["wall_seconds"] == pytest.approx(20)
    by_job = {j["job"]: j for j in report["jobs"]}
    assert list(by_job) == ["plan", "render:2", "render:0", "render:1 #1", "render:1 #2", "encode"]
    assert by_job["render:0"] | {"duration": pytest.approx(5), "offset": pytest.approx(4)} == {
        "job": "render:0", "kind": "render", "attempt": 1, "chunk": 0, "offset": 4, "duration": 5,
        "host": "b", "status": "OK", "frames": 3}
    assert by_job["render:1 #1"]["status"] == "ERROR"
    assert report["failed_attempts"] == 1
    assert report["retried_chunks"] == [1]


def test_critical_path_walks_back_through_the_retry_and_counts_the_waits() -> None:
    path = build_report(batch_run())["critical_path"]
    assert path["jobs"] == ["plan", "render:1 #1", "render:1 #2", "encode"]
    assert [s["wait_before"] for s in path["steps"]] == pytest.approx([1, 3, 1, 2])
    assert path["seconds"] == pytest.approx({"plan": 1, "render": 10, "encode": 1.5, "waiting": 7,
                                             "other": 0.5})
    assert sum(path["seconds"].values()) == pytest.approx(20)


def test_slowest_chunk_and_frame() -> None:
    report = build_report(batch_run())
    assert report["slowest_chunk"] == {"job": "render:1 #1", "chunk": 1, "attempt": 1, "duration": 7,
                                       "frames": 3, "host": "c", "status": "ERROR"}
    assert report["slowest_frame"] == {"frame": 2, "chunk": 0, "job": "render:0", "duration": 1.5,
                                       "render_seconds": 1.2, "encode_seconds": 0.3}


def test_where_time_went_counts_each_second_once() -> None:
    report = build_report(batch_run())
    # botocore's spans are inside storage/job-log spans; the segment download inside concat is
    # storage, not encode.
    assert report["breakdown"] == pytest.approx({
        "render": 0.8 + 0.8 + 1.2 + 0.4 + 3 * 0.7 + 0.9,
        "encode": 0.2 + 0.2 + 0.3 + 0.1 + 3 * 0.1 + 0.1 + 0.3 + (0.8 - 0.3) + 0.3,
        "storage": 0.1 + 0.5 + 0.3,
        "job log": 0.1 + 0.1,
        "waiting": 7,
        "other": 22.5 - 9.6})
    assert report["job_seconds"] == pytest.approx(22.5)
    assert sum(report["breakdown"].values()) == pytest.approx(22.5 + 7)
    json.dumps(report)  # JSON-safe


def test_text_shows_bars_failed_attempt_path_and_shares() -> None:
    text = render_text(build_report(batch_run()), width=20)
    lines = text.splitlines()
    assert lines[0] == "run r1: 20.0 s wall, 4 render attempts (1 failed), 9 frames, 28 spans"
    plan = next(line for line in lines if line.startswith("plan "))
    assert plan == "plan        | █                  |   1.00 s  a"  # 1 s to 2 s of 20, 20 columns
    failed = next(line for line in lines if line.startswith("render:1 #1"))
    assert "▒" * 7 in failed and "FAILED" in failed
    assert "render:1 #2" in text
    assert "critical path: plan → render:1 #1 → render:1 #2 → encode" in text
    assert "waits: 3.00 s before render:1 #1, 2.00 s before encode, 1.00 s before plan" in text
    assert "slowest chunk: render:1 #1 7.00 s on c, FAILED" in text
    assert "slowest frame: 2 in render:0: 1.50 s (render 1.20 s, encode 0.30 s)" in text
    assert "  waiting      7.00 s   24%" in text  # 7 of 29.5
    assert "  encode       2.30 s    8%" in text


def test_clock_skew_between_hosts_is_no_wait() -> None:
    t = Trace()
    run = t.add("run", 0, 10)
    t.job("plan", 0, 2, run)
    t.job("render:0", 1.95, 8, run, chunk=0, frames=(0, 10))  # its host's clock is 50 ms behind
    t.job("encode", 8, 9, run)
    path = build_report(t.spans)["critical_path"]
    assert path["jobs"] == ["plan", "render:0", "encode"]
    assert path["seconds"] == pytest.approx({"plan": 2, "render": 6, "encode": 1, "waiting": 0, "other": 1})


def many_chunks(chunks: int = 300, workers: int = 4) -> list[dict[str, Any]]:
    """A local run: `workers` processes take chunks in turn; chunk 7 fails once, chunk 123 is slow."""
    t = Trace()
    run = t.add("run", 0, 0)  # its end is set below
    t.job("plan", 0, 1, run)
    free = [1.0] * workers
    for chunk in range(chunks):
        worker = min(range(workers), key=lambda w: free[w])
        attempts = [("ERROR", 1), ("OK", 2)] if chunk == 7 else [("OK", 1)]
        for status, attempt in attempts:
            start = free[worker]
            end = start + (9.0 if chunk == 123 else 1.0 + chunk % 3 * 0.1)
            t.job(f"render:{chunk}", start, end, run, chunk=chunk, frames=(chunk * 10, chunk * 10 + 10),
                  status=status, attempt=attempt)
            free[worker] = end
    t.job("encode", max(free), max(free) + 2, run)
    t.spans[0]["end"] = 1000 + max(free) + 2.5
    return t.spans


def test_many_chunks_stay_readable() -> None:
    report = build_report(many_chunks())
    assert len(report["jobs"]) == 303
    assert report["slowest_chunk"]["job"] == "render:123"
    assert report["breakdown"]["waiting"] == 0  # local workers start a chunk as soon as one ends
    text = render_text(report, width=40)
    lines = text.splitlines()
    assert len(lines) < 40
    assert all(len(line) < 120 for line in lines)
    assert any(line.startswith("render:123 ") for line in lines)
    failed = next(line for line in lines if line.startswith("render:7 #1"))
    assert "FAILED" in failed
    assert any(line.startswith("render:7 #2") for line in lines)
    folded = next(line for line in lines if line.startswith("+291 renders"))
    assert "median" in folded
    path = next(line for line in lines if line.startswith("critical path:"))
    assert path.startswith("critical path: plan → ") and path.endswith(" → encode") and "more" in path
    # a few render lines, not 301
    assert sum(line.startswith("render:") for line in lines) == 10


def test_a_trace_without_jobs() -> None:
    t = Trace()
    t.add("run", 0, 0.5, run_id="r9")
    report = build_report(t.spans)
    assert report["critical_path"]["jobs"] == []
    assert report["slowest_chunk"] is None and report["slowest_frame"] is None
    assert "no plan, render or encode spans" in render_text(report)


# -- the command ---------------------------------------------------------------------------------------

def store(url: str, run_id: str, spans: list[dict[str, Any]]) -> None:
    body = "".join(json.dumps(s) + "\n" for s in spans)
    open_storage(url).put_bytes(f"runs/{run_id}/trace.jsonl", body.encode())


@pytest.fixture(autouse=True)
def _no_storage_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRAMEFARM_STORAGE", raising=False)


def test_trace_command_prints_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = tmp_path.as_uri()
    store(url, "r1", batch_run())
    assert main(["trace", "r1", "--storage", url, "--width", "30"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("run r1: 20.0 s wall")
    assert "critical path: plan → render:1 #1 → render:1 #2 → encode" in out
    bar = next(line for line in out.splitlines() if line.startswith("encode "))
    assert bar.count("|") == 2 and len(bar.split("|")[1]) == 30

    assert main(["trace", "r1", "--storage", url, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["wall_seconds"] == pytest.approx(20)
    assert report["critical_path"]["seconds"]["waiting"] == pytest.approx(7)


def test_trace_command_finds_storage_from_the_environment_then_the_default(
        workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    store((workdir / "framefarm-data").as_uri(), "r1", batch_run())
    assert main(["trace", "r1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run_id"] == "r1"

    elsewhere = workdir / "elsewhere"
    store(elsewhere.as_uri(), "r2", batch_run())
    monkeypatch.setenv("FRAMEFARM_STORAGE", elsewhere.as_uri())
    assert main(["trace", "r2"]) == 0
    assert capsys.readouterr().out.startswith("run r2:")


def test_trace_of_a_run_without_spans_is_one_line_and_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = tmp_path.as_uri()
    assert main(["trace", "nope", "--storage", url]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert "'nope'" in captured.err and url in captured.err and "--storage" in captured.err
