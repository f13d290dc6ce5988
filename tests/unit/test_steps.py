"""The three steps in one process against in-memory storage (the file-backed runs are in
tests/integration)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from framefarm.errors import UserError
from framefarm.steps import (
    EncodeRequest,
    PlanRequest,
    RenderRequest,
    run_encode,
    run_plan,
    run_render,
)
from framefarm.steps.encode import VideoCheckFailed, check_video
from framefarm.storage.memory import MemoryStorage
from framefarm.video import VideoCheck, VideoInfo, probe

SKETCH = """
    import numpy as np
    WIDTH, HEIGHT, FRAMES = 32, 16, 9
    def render(ctx):
        return np.full((ctx.height, ctx.width, 3), ctx.frame * 20, np.uint8)
"""


@pytest.fixture
def storage(request: pytest.FixtureRequest) -> MemoryStorage:
    store = MemoryStorage(request.node.name)
    store.clear()
    return store


def test_plan_render_encode_in_memory(storage: MemoryStorage, write_sketch: Callable[..., Path],
                                      tmp_path: Path) -> None:
    plan = run_plan(PlanRequest(sketch=str(write_sketch(SKETCH)), run_id="m", frames_per_job=4),
                    storage=storage)
    assert (plan.total_frames, plan.size, plan.video.width, plan.video.height) == (9, 3, 32, 16)
    assert plan.sketch.startswith("memory://") and plan.sketch.endswith(".py")
    seen: list[int] = []
    for index in (2, 0, 1):
        result = run_render(RenderRequest(run_id="m", index=index), storage=storage,
                            on_frame=seen.append)
        assert result.segment == f"runs/m/segments/{index:05d}.mp4"
    assert seen == [1, 1, 2, 3, 4, 1, 2, 3, 4]
    out = tmp_path / "video.mp4"
    encoded = run_encode(EncodeRequest(run_id="m", output=str(out)), storage=storage)
    assert (encoded.frames, encoded.width, encoded.height) == (9, 32, 16)
    assert probe(out).frames == 9
    assert storage.get_bytes("runs/m/output.mp4") == out.read_bytes()


def test_more_chunks_than_the_runner_takes_is_refused_before_anything_is_stored(
        storage: MemoryStorage, write_sketch: Callable[..., Path]) -> None:
    request = PlanRequest(sketch=str(write_sketch(SKETCH)), run_id="big", total_frames=20_001,
                          frames_per_job=2, max_chunks=10_000)
    with pytest.raises(UserError) as refused:
        run_plan(request, storage=storage)
    assert str(refused.value) == (
        "10001 render jobs is more than the 10000 this runner takes in one run: set "
        "FRAMES_PER_RENDER_JOB (--per-job) to 3 or more, or leave it to auto")
    assert storage.list("") == []  # no plan, no sketch copy
    plan = run_plan(PlanRequest(sketch=request.sketch, run_id="big", total_frames=20_001,
                                frames_per_job=3, max_chunks=10_000), storage=storage)
    assert plan.size == 6_667


def test_encode_delivers_to_a_storage_url(storage: MemoryStorage,
                                          write_sketch: Callable[..., Path]) -> None:
    run_plan(PlanRequest(sketch=str(write_sketch(SKETCH)), run_id="u", frames_per_job=9),
             storage=storage)
    run_render(RenderRequest(run_id="u", index=0), storage=storage)
    target = MemoryStorage("delivered-" + storage.url.rsplit("/", 1)[-1])
    encoded = run_encode(EncodeRequest(run_id="u", output=target.url + "/final/v.mp4"),
                         storage=storage)
    assert encoded.output == target.url + "/final/v.mp4"
    assert target.get_bytes("final/v.mp4") == storage.get_bytes("runs/u/output.mp4")


def test_encode_refuses_missing_segments(storage: MemoryStorage,
                                         write_sketch: Callable[..., Path]) -> None:
    run_plan(PlanRequest(sketch=str(write_sketch(SKETCH)), run_id="x", frames_per_job=2),
             storage=storage)
    run_render(RenderRequest(run_id="x", index=1), storage=storage)
    with pytest.raises(UserError, match=r"4 of 5 segments are missing \(chunks 0, 2, 3, 4\)"):
        run_encode(EncodeRequest(run_id="x"), storage=storage)


def test_check_video_names_every_problem(storage: MemoryStorage,
                                         write_sketch: Callable[..., Path]) -> None:
    plan = run_plan(PlanRequest(sketch=str(write_sketch(SKETCH)), run_id="c", frames_per_job=3),
                    storage=storage)
    info = VideoInfo(frames=8, width=30, height=16, fps=plan.video.rate * 2, codec="h264",
                     pix_fmt="yuv420p", duration=0.1)
    bad = VideoCheck(info=info, positions=list(range(8)), key_frames=3, key_frames_decoded=2)
    with pytest.raises(VideoCheckFailed) as caught:
        check_video(bad, plan)
    text = str(caught.value)
    assert "8 frames, expected 9" in text and "2 of 3 key frames decode" in text
    assert "size 30x16, expected 32x16" in text and "60.000 fps, expected 30.000" in text
    good_info = VideoInfo(frames=9, width=32, height=16, fps=plan.video.rate, codec="h264",
                          pix_fmt="yuv420p", duration=0.3)
    shuffled = VideoCheck(info=good_info, positions=[0, 1, 2, 3, 4, 5, 6, 7, 9],
                          key_frames=3, key_frames_decoded=3)
    with pytest.raises(VideoCheckFailed, match="frames out of place"):
        check_video(shuffled, plan)
    check_video(VideoCheck(info=good_info, positions=list(range(9)), key_frames=3,
                           key_frames_decoded=3), plan)
