"""A run's status, derived from the last attempt of each of its jobs."""

from __future__ import annotations

import json
from dataclasses import asdict, fields

import pytest

from framefarm.model import JobRecord, RunRecord, can_move
from framefarm.report import run_status, status_report


def job(name: str, status: str, attempt: int = 1, frames: int = 0) -> JobRecord:
    kind, _, index = name.partition(":")
    return JobRecord(run_id="r", job=name, kind=kind, index=int(index) if index else None,  # type: ignore[arg-type]
                     attempt=attempt, status=status, frames=frames)


@pytest.mark.parametrize("statuses, expected", [
    ([], "PENDING"),
    ([("plan", "RUNNING")], "RUNNING"),
    ([("plan", "SUCCEEDED"), ("render:0", "RUNNABLE")], "RUNNING"),
    ([("plan", "SUBMITTED")], "SUBMITTED"),
    ([("plan", "SUCCEEDED"), ("render:0", "FAILED"), ("render:1", "SUCCEEDED")], "FAILED"),
    ([("plan", "SUCCEEDED"), ("render:0", "SUCCEEDED"), ("encode", "SUCCEEDED")], "SUCCEEDED"),
])
def test_run_status(statuses: list[tuple[str, str]], expected: str) -> None:
    assert run_status([job(n, s) for n, s in statuses]) == expected


def test_report_uses_the_last_attempt_and_lists_every_attempt() -> None:
    records = [job("plan", "SUCCEEDED"), job("render:0", "FAILED", 1, 3),
               job("render:0", "SUCCEEDED", 2, 10), job("encode", "SUCCEEDED")]
    run = RunRecord(run_id="r", plan={"total_frames": 10, "size": 1, "frames_per_job": 10})
    report = status_report(run, records, "r")
    assert report["status"] == "SUCCEEDED"
    assert report["frames_done"] == 10
    assert [(j["job"], j["attempt"]) for j in report["jobs"]] == [
        ("plan", 1), ("render:0", 1), ("render:0", 2), ("encode", 1)]


def test_statuses_only_move_forwards() -> None:
    assert can_move("SUBMITTED", "RUNNING")
    assert can_move("RUNNING", "FAILED")
    assert not can_move("RUNNING", "RUNNABLE")
    assert not can_move("SUCCEEDED", "FAILED")
    assert not can_move("FAILED", "RUNNING")


def test_a_job_record_as_status_json_shows_it() -> None:
    record = JobRecord(run_id="r", job="render:3", kind="render", index=3, attempt=2,
                       status="SUCCEEDED", outputs=("runs/r/segments/00003.mp4",), sha256="ab",
                       bytes=1234, plan_hash="cd", frames=10)
    data = record.to_dict()
    assert list(data) == [f.name for f in fields(JobRecord)]
    assert data["outputs"] == ["runs/r/segments/00003.mp4"]
    assert {**asdict(record), "outputs": list(record.outputs)} == data
    assert JobRecord.from_dict(json.loads(json.dumps(data))) == record
