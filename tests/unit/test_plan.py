"""The plan is a pure function: ceil(N / K) chunks covering every frame exactly once."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from framefarm.errors import UserError
from framefarm.model import Plan, VideoSettings
from framefarm.steps._sizing import auto_frames_per_job, estimate_frame_seconds
from framefarm.steps.plan import make_plan

VIDEO = VideoSettings(width=64, height=48, fps="30")


def plan_of(total: int, per_job: int) -> Plan:
    return make_plan(run_id="r", sketch="s.py", total_frames=total, frames_per_job=per_job,
                     video=VIDEO)


@given(total=st.integers(1, 5000), per_job=st.integers(1, 6000))
def test_every_frame_is_in_exactly_one_chunk(total: int, per_job: int) -> None:
    plan = plan_of(total, per_job)
    chunks = list(plan.chunks())
    assert plan.size == len(chunks) == math.ceil(total / per_job)
    frames = [f for c in chunks for f in c.frames]
    assert frames == list(range(total))
    for i, chunk in enumerate(chunks):
        assert chunk.index == i
        assert (chunk.start, chunk.stop) == (i * per_job, min((i + 1) * per_job, total))
        assert 0 < len(chunk) <= per_job


@given(total=st.integers(1, 10**9), per_job=st.integers(1, 10**6))
def test_huge_plans_cost_nothing_to_make(total: int, per_job: int) -> None:
    plan = plan_of(total, per_job)
    last = plan.chunk(plan.size - 1)
    assert last.stop == total
    assert last.start == (plan.size - 1) * per_job


def test_uneven_chunks_48_by_7() -> None:
    plan = plan_of(48, 7)
    assert plan.size == 7
    assert [(c.start, c.stop) for c in plan.chunks()][-2:] == [(35, 42), (42, 48)]


def test_chunk_outside_the_plan_is_an_error() -> None:
    with pytest.raises(IndexError):
        plan_of(10, 3).chunk(4)


@pytest.mark.parametrize("total, per_job", [(0, 1), (-5, 1), (10, 0), (10, -1), ("x", 1)])
def test_bad_counts_are_user_errors(total: object, per_job: object) -> None:
    with pytest.raises(UserError, match="whole number above 0"):
        make_plan(run_id="r", sketch="s.py", total_frames=total, frames_per_job=per_job,  # type: ignore[arg-type]
                  video=VIDEO)


def test_plan_json_round_trip_lists_every_chunk() -> None:
    plan = plan_of(10, 4)
    data = json.loads(plan.to_json())
    assert data["chunks"] == [[0, 4], [4, 8], [8, 10]]
    assert data["size"] == 3
    assert Plan.from_json(plan.to_json()) == plan


@pytest.mark.parametrize("total, frame_seconds, parallelism, start, expected_chunks", [
    (240, 0.03, 2, 0.005, 8),         # one machine: 4 chunks per worker
    (240, 0.0001, 2, 0.005, 1),       # a tiny video: one chunk, not 8 of nothing
    (10, 0.03, 2, 0.005, 1),          # 0.3 s of work: no point splitting below 0.25 s chunks
    (7, 10.0, 8, 0.005, 7),           # never more chunks than frames
    (100_000, 1.0, 0, 20.0, 500),     # AWS Batch: chunks of 200 s (3 min 20 s)
    (10**9, 1.0, 0, 20.0, 10_000),    # and never past the array limit
])
def test_auto_chunk_size(total: int, frame_seconds: float, parallelism: int, start: float,
                         expected_chunks: int) -> None:
    per_job = auto_frames_per_job(total_frames=total, frame_seconds=frame_seconds,
                                  parallelism=parallelism, start_cost=start)
    assert math.ceil(total / per_job) == expected_chunks


def test_frame_estimate_counts_the_encoder() -> None:
    fast = estimate_frame_seconds(0.005, width=1280, height=720, preset="fast")
    assert 0.025 < fast < 0.04
    assert estimate_frame_seconds(0.005, width=1280, height=720, preset="ultrafast") < fast
