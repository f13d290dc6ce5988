"""The plan is a pure function: ceil(N / K) chunks covering every frame exactly once."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from framefarm.errors import UserError
from framefarm.model import Plan, VideoSettings
from framefarm.steps._sizing import (
    KeyCost,
    auto_frames_per_job,
    estimate_frame_seconds,
    needs_key_probe,
    needs_probe,
)
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


# Key and predicted frame bytes as the probe measures them at 1280x720, crf 18, preset fast.
MOVING = KeyCost(key_bytes=24_804, frame_bytes=7_543)      # examples/plasma.py
NEAR_STATIC = KeyCost(key_bytes=8_508, frame_bytes=224)    # examples/tracker.py


@pytest.mark.parametrize("total, parallelism, cost, expected_chunks", [
    (240, 2, MOVING, 2),           # a key frame costs ~3 predicted ones: a segment per worker
    (240, 16, MOVING, 3),          # but not 16: their key frames would add ~15% to the file
    (240, 2, NEAR_STATIC, 1),      # a key frame costs ~40 predicted ones: one segment
    (100, 2, MOVING, 1),           # segments of 50 frames are too short to restart x264 for
    (2400, 2, MOVING, 8),          # long enough that rule 1's free segments decide
    (240, 2, None, 1),             # no probe: only the free segments
    (240, 0, MOVING, 1),           # parallelism unknown (AWS Batch): only the free segments
])
def test_segments_shorter_than_keyint_only_when_key_frames_are_cheap(
        total: int, parallelism: int, cost: KeyCost | None, expected_chunks: int) -> None:
    per_job = auto_frames_per_job(total_frames=total, frame_seconds=None, parallelism=parallelism,
                                  start_cost=0.005, key_cost=cost, size_budget=0.02)
    assert math.ceil(total / per_job) == expected_chunks
    # without a size budget (the default) only the free segments, whatever the probe said
    alone = auto_frames_per_job(total_frames=total, frame_seconds=None, parallelism=parallelism,
                                start_cost=0.005, key_cost=cost)
    assert math.ceil(total / alone) == max(1, min(total // 250, 4 * max(parallelism, 1)))
    if cost is not None:  # what the extra key frames add stays within the budget
        extra = math.ceil(total / per_job) - max(1, total // 250)
        assert extra * cost.extra_share(total) <= 0.02


@pytest.mark.parametrize("total, parallelism, frame_seconds, start, needed", [
    (240, 2, None, 0.005, True),
    (119, 2, None, 0.005, False),       # no two segments of 60 frames fit
    (240, 1, None, 0.005, False),       # one worker: one segment
    (2400, 2, None, 0.005, False),      # rule 1's free segments already give every worker one
    (240, 0, 0.03, 20.0, False),        # AWS Batch: rule 2 wants one chunk anyway
])
@pytest.mark.parametrize("budget", [0.02, 0.0])
def test_key_frames_are_probed_only_when_they_can_change_the_plan(
        total: int, parallelism: int, frame_seconds: float | None, start: float,
        needed: bool, budget: float) -> None:
    needed = needed and budget > 0  # no size budget (the default): never
    assert needs_key_probe(total_frames=total, parallelism=parallelism,
                           frame_seconds=frame_seconds, start_cost=start,
                           size_budget=budget) is needed
    if not needed:
        plans = {auto_frames_per_job(total_frames=total, frame_seconds=frame_seconds,
                                     parallelism=parallelism, start_cost=start, key_cost=cost,
                                     size_budget=budget)
                 for cost in (None, MOVING, NEAR_STATIC, KeyCost(key_bytes=1, frame_bytes=1))}
        assert len(plans) == 1


@pytest.mark.parametrize("max_chunks, expected_chunks", [
    (10_000, 10_000),        # AWS Batch: never past its array limit
    (0, 4_000_000),          # no limit of its own: rule 1 (segments of 250 frames) alone
])
def test_auto_chunks_stay_within_the_runners_limit(max_chunks: int, expected_chunks: int) -> None:
    per_job = auto_frames_per_job(total_frames=10**9, frame_seconds=1.0, parallelism=0,
                                  start_cost=20.0, max_chunks=max_chunks)
    assert math.ceil(10**9 / per_job) == expected_chunks


def test_frame_estimate_counts_the_encoder() -> None:
    fast = estimate_frame_seconds(0.005, width=1280, height=720, preset="fast")
    assert 0.025 < fast < 0.04
    assert estimate_frame_seconds(0.005, width=1280, height=720, preset="ultrafast") < fast
