"""A run's life read from the job log: cancelled and lost attempts, and the segment check that
keeps a corrupt, swapped or stale segment out of the video."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from framefarm.errors import SegmentRejected
from framefarm.integrity import SegmentDigest, check_segment, file_digest, plan_hash
from framefarm.lifecycle import expected_segments, lost, with_lost
from framefarm.model import Chunk, JobRecord
from framefarm.report import run_status


def job(name: str, status: str, attempt: int = 1, **fields: object) -> JobRecord:
    kind, _, index = name.partition(":")
    return JobRecord(run_id="r", job=name, kind=kind, index=int(index) if index else None,  # type: ignore[arg-type]
                     attempt=attempt, status=status, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("statuses, cancelled, expected", [
    ([("plan", "SUCCEEDED"), ("render:0", "CANCELLED"), ("render:1", "SUCCEEDED")], False,
     "CANCELLED"),
    ([("plan", "SUCCEEDED"), ("render:0", "CANCELLED"), ("render:1", "RUNNING")], False,
     "RUNNING"),
    ([("plan", "SUCCEEDED"), ("render:0", "RUNNING")], True, "CANCELLED"),
    ([("plan", "SUCCEEDED"), ("render:0", "FAILED")], True, "CANCELLED"),
    ([("plan", "SUCCEEDED"), ("encode", "SUCCEEDED")], True, "SUCCEEDED"),
    ([], True, "CANCELLED"),
])
def test_a_cancelled_run(statuses: list[tuple[str, str]], cancelled: bool, expected: str) -> None:
    assert run_status([job(n, s) for n, s in statuses], cancelled=cancelled) == expected


def _stamp(seconds_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")


def test_an_attempt_silent_past_its_timeout_is_lost() -> None:
    fresh = job("render:0", "RUNNING", heartbeat_at=_stamp(3), started_at=_stamp(300))
    silent = job("render:1", "RUNNING", heartbeat_at=_stamp(90), started_at=_stamp(300))
    never = job("render:2", "RUNNING", started_at=_stamp(90))
    done = job("render:3", "SUCCEEDED", heartbeat_at=_stamp(900))
    assert [lost(r) for r in (fresh, silent, never, done)] == [False, True, True, False]
    shown = with_lost([fresh, silent])
    assert [r.status for r in shown] == ["RUNNING", "FAILED"]
    assert shown[1].error.startswith("lost: render:1 attempt 1")


def test_an_attempt_whose_process_is_gone_from_this_host_is_lost_at_once() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    here = socket.gethostname()
    dead = job("render:0", "RUNNING", heartbeat_at=_stamp(1), host=here, runner_id=f"pid:{child.pid}")
    alive = job("render:1", "RUNNING", heartbeat_at=_stamp(1), host=here,
                runner_id=f"pid:{os.getpid()}")
    elsewhere = job("render:2", "RUNNING", heartbeat_at=_stamp(1), host="another-host",
                    runner_id=f"pid:{child.pid}")
    assert [lost(r) for r in (dead, alive, elsewhere)] == [True, False, False]
    assert f"on {here} (pid {child.pid}) has not sent a heartbeat" in with_lost([dead])[0].error


def test_expected_segments_are_the_latest_successful_attempts() -> None:
    records = [job("render:0", "SUCCEEDED", 1, sha256="a", bytes=1, frames=2, plan_hash="p"),
               job("render:0", "SUCCEEDED", 2, sha256="b", bytes=2, frames=2, plan_hash="p"),
               job("render:0", "FAILED", 3, sha256="", frames=1),
               job("render:1", "FAILED", 1), job("encode", "SUCCEEDED")]
    assert expected_segments(records) == {
        0: SegmentDigest(sha256="b", bytes=2, frames=2, plan_hash="p")}


@pytest.fixture
def segment(tmp_path: Path) -> tuple[Path, SegmentDigest]:
    path = tmp_path / "00003.mp4"
    path.write_bytes(b"segment bytes " * 1000)
    sha, size = file_digest(path)
    return path, SegmentDigest(sha256=sha, bytes=size, frames=10, plan_hash=plan_hash(b"plan"))


CHUNK = Chunk(3, 30, 40)


def test_a_matching_segment_passes(segment: tuple[Path, SegmentDigest]) -> None:
    path, digest = segment
    check_segment(path, chunk=CHUNK, expected=digest, plan=plan_hash(b"plan"), key="k", run_id="r")


@pytest.mark.parametrize("change, words", [
    ("bytes", "does not match what its render job wrote"),
    ("plan", "was rendered for another plan"),
    ("frames", "holds 9 frames, the chunk has 10"),
    ("none", "has no successful render job"),
])
def test_a_segment_that_does_not_match_is_refused(segment: tuple[Path, SegmentDigest],
                                                  change: str, words: str) -> None:
    path, digest = segment
    plan = plan_hash(b"plan")
    expected: SegmentDigest | None = digest
    if change == "bytes":
        data = bytearray(path.read_bytes())
        data[100] ^= 0xFF  # one flipped byte, same size
        path.write_bytes(bytes(data))
    elif change == "plan":
        plan = plan_hash(b"an edited plan")
    elif change == "frames":
        expected = SegmentDigest(sha256=digest.sha256, bytes=digest.bytes, frames=9,
                                 plan_hash=digest.plan_hash)
    else:
        expected = None
    with pytest.raises(SegmentRejected) as caught:
        check_segment(path, chunk=CHUNK, expected=expected, plan=plan, key="runs/r/segments/00003.mp4",
                      run_id="r")
    assert caught.value.index == 3
    message = str(caught.value)
    assert message.startswith("run r: chunk 3 (frames 30-39): segment runs/r/segments/00003.mp4")
    assert words in message and "framefarm resume r" in message
