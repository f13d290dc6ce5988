"""The plan is a pure function: ceil(N / K) chunks covering every frame exactly once."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from framefarm.errors import UserError
from framefarm.model import Plan, VideoSettings
from framefarm.steps._sizing import auto_frames_per_job, estimate_frame_seconds, needs_probe
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


@pytest.mark.parametrize("total, frame_seconds, parallelism, start, expected_chunks", [
    (240, 0.03, 2, 0.005, 1),         # shorter than x264's key-frame interval: one segment
    (2400, 0.03, 2, 0.005, 8),        # 9 segments of 250+ frames fit; 8 keeps 2 workers even
    (2400, 0.03, 3, 0.005, 9),        # 9 = 3 rounds of 3
    (750, 0.03, 2, 0.005, 2),         # 3 fit, 2 keep both workers busy to the end
    (100_000, 0.03, 2, 0.005, 8),     # one machine: at most 4 chunks per worker
    (2_000, 0.0001, 2, 0.005, 1),     # 0.2 s of work in all: not worth a second chunk
    (7, 10.0, 8, 0.005, 1),           # a few slow frames: one segment, drawn 8 wide
    (100_000, 0.1, 0, 20.0, 50),      # AWS Batch: chunks of 200 s (3 min 20 s)
    (10**9, 1.0, 0, 20.0, 10_000),    # and never past the array limit
])
def test_auto_chunk_size(total: int, frame_seconds: float, parallelism: int, start: float,
                         expected_chunks: int) -> None:
    per_job = auto_frames_per_job(total_frames=total, frame_seconds=frame_seconds,
                                  parallelism=parallelism, start_cost=start)
    assert math.ceil(total / per_job) == expected_chunks


@pytest.mark.parametrize("total, size, parallelism, start, needed", [
    (240, (1280, 720), 2, 0.005, False),      # x264 alone makes 250 frames outlast 0.25 s
    (100_000, (1280, 720), 2, 0.005, False),
    (10_000, (64, 64), 2, 0.005, True),       # tiny frames: the sketch's time may decide
    (100_000, (1280, 720), 0, 20.0, True),    # AWS Batch: a chunk must outlast 200 s
])
def test_probe_frame_only_when_it_can_change_the_plan(total: int, size: tuple[int, int],
                                                      parallelism: int, start: float,
                                                      needed: bool) -> None:
    width, height = size
    assert needs_probe(total_frames=total, width=width, height=height, preset="fast",
                       parallelism=parallelism, start_cost=start) is needed
    if not needed:  # then the frames' time cannot matter: any time gives the same plan
        plans = {auto_frames_per_job(total_frames=total, frame_seconds=t, parallelism=parallelism,
                                     start_cost=start) for t in (None, 0.028, 1.0, 100.0)}
        assert len(plans) == 1


def test_frame_estimate_counts_the_encoder() -> None:
    fast = estimate_frame_seconds(0.005, width=1280, height=720, preset="fast")
    assert 0.025 < fast < 0.04
    assert estimate_frame_seconds(0.005, width=1280, height=720, preset="ultrafast") < fast
