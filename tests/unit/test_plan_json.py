"""plan.json holds a plan's numbers, not a list of its chunks, and older plan.json files that
list every chunk still read, with the same chunks and the same hash."""

from __future__ import annotations

import hashlib
import json

import pytest

from framefarm.errors import UserError
from framefarm.integrity import plan_hash
from framefarm.joblog import open_joblog
from framefarm.lifecycle import chunks_to_render
from framefarm.model import Plan, VideoSettings
from framefarm.steps._keys import plan_key, segment_key
from framefarm.steps.plan import make_plan, read_plan_and_hash
from framefarm.storage import open_storage

RUN = "20260101-000000-abcdef"
# Written by framefarm before plans were stored by their numbers (commit 220bd5f's Plan.to_json).
OLD_PLAN_JSON = (
    b'{"chunks":[[0,4],[4,8],[8,10]],"created_at":"2026-01-01T00:00:00Z","frames_per_job":4,'
    b'"keep_frames":false,"output":"/tmp/out.mp4","run_id":"20260101-000000-abcdef","size":3,'
    b'"sketch":"file:///data/sketches/0000000000000000000000000000000000000000000000000000000000000000.py",'
    b'"sketch_name":"examples/plasma.py","total_frames":10,'
    b'"video":{"crf":18,"fps":"30000/1001","height":48,"preset":"fast","width":64}}')
OLD_KEYS = {"chunks", "created_at", "frames_per_job", "keep_frames", "output", "run_id", "size",
            "sketch", "sketch_name", "total_frames", "video"}


def plan_of(total: int, per_job: int, run_id: str = RUN) -> Plan:
    return make_plan(run_id=run_id, sketch="s.py", total_frames=total, frames_per_job=per_job,
                     video=VideoSettings(width=64, height=48, fps="30000/1001"),
                     output="/tmp/out.mp4", sketch_name="examples/plasma.py")


def test_plan_json_round_trips_by_its_numbers() -> None:
    plan = plan_of(10, 4)
    data = json.loads(plan.to_json())
    assert set(data) == OLD_KEYS - {"chunks"}  # every key kept but the list of chunks
    assert (data["total_frames"], data["frames_per_job"], data["size"]) == (10, 4, 3)
    again = Plan.from_json(plan.to_json())
    assert again == plan
    assert [(c.start, c.stop) for c in again.chunks()] == [(0, 4), (4, 8), (8, 10)]
    assert again.to_json() == plan.to_json()


def test_the_run_record_keeps_the_same_small_dict() -> None:
    plan = plan_of(1_000_000, 1)
    assert plan.to_dict() == json.loads(plan.to_json())
    assert Plan.from_dict(plan.to_dict()) == plan


@pytest.mark.parametrize("total, per_job", [(1_000_000, 1), (10**9, 1), (10**9, 7), (1, 1)])
def test_a_huge_plan_json_stays_small(total: int, per_job: int) -> None:
    plan = plan_of(total, per_job)
    text = plan.to_json().encode()
    assert len(text) < 512
    assert len(text) - len(plan_of(1, 1).to_json()) < 32  # only the numbers' digits grow
    last = Plan.from_json(text).chunk(plan.size - 1)
    assert (last.start, last.stop) == ((plan.size - 1) * per_job, total)


def test_an_old_plan_json_listing_every_chunk_still_reads() -> None:
    old = Plan.from_json(OLD_PLAN_JSON)
    assert [(c.index, c.start, c.stop) for c in old.chunks()] == [(0, 0, 4), (1, 4, 8),
                                                                  (2, 8, 10)]
    assert old.chunk(2).frames == range(8, 10)
    assert (old.run_id, old.size, old.video.fps) == (RUN, 3, "30000/1001")


def test_an_old_plan_json_keeps_its_hash() -> None:
    storage = open_storage("memory://old-plan-hash")
    storage.put_bytes(plan_key(RUN), OLD_PLAN_JSON)
    plan, digest = read_plan_and_hash(RUN, storage)
    assert digest == plan_hash(OLD_PLAN_JSON) == hashlib.sha256(OLD_PLAN_JSON).hexdigest()
    assert plan == Plan.from_json(OLD_PLAN_JSON)
    assert storage.get_bytes(plan_key(RUN)) == OLD_PLAN_JSON  # reading never rewrites it


def test_segments_of_a_run_planned_by_an_old_version_still_verify() -> None:
    storage = open_storage("memory://old-plan-resume")
    joblog = open_joblog("memory://old-plan-resume")
    storage.put_bytes(plan_key(RUN), OLD_PLAN_JSON)
    plan, digest = read_plan_and_hash(RUN, storage)
    for chunk in list(plan.chunks())[:2]:  # chunks 0 and 1 were rendered, 2 was not
        data = f"segment {chunk.index}".encode()
        storage.put_bytes(segment_key(RUN, chunk.index), data)
        record = joblog.start_job(run_id=RUN, kind="render", index=chunk.index)
        joblog.update_job(record, status="SUCCEEDED", frames=len(chunk), bytes=len(data),
                          sha256=hashlib.sha256(data).hexdigest(),
                          plan_hash=plan_hash(OLD_PLAN_JSON))
    assert chunks_to_render(plan, digest, storage=storage, joblog=joblog) == [2]


@pytest.mark.parametrize("edit, reason", [
    ({"chunks": [[0, 4], [4, 9], [9, 10]]}, "list of chunks is not the 3 chunks"),
    ({"chunks": [[0, 4], [4, 8]]}, "list of chunks is not the 3 chunks"),
    ({"chunks": [[0, 4], [4, 8], [8, 10], [10, 12]]}, "list of chunks is not the 3 chunks"),
    ({"chunks": "0-10"}, "list of chunks is not the 3 chunks"),
    ({"size": 4}, "its size 4 is not the 3 chunks of 10 frames by 4"),
    ({"frames_per_job": 0}, "total_frames 10 and frames_per_job 0 must be above 0"),
    ({"total_frames": -10, "size": 0, "chunks": []}, "total_frames -10 and frames_per_job 4"),
])
def test_a_plan_json_whose_numbers_disagree_is_refused(edit: dict[str, object],
                                                       reason: str) -> None:
    storage = open_storage("memory://edited-plan")
    storage.put_bytes(plan_key(RUN), json.dumps({**json.loads(OLD_PLAN_JSON), **edit}).encode())
    with pytest.raises(UserError, match="is corrupt or was edited by hand") as caught:
        read_plan_and_hash(RUN, storage)
    assert reason in str(caught.value)


def test_to_dict_still_lists_chunks_when_asked() -> None:
    """`Plan.to_dict(chunks=True)` is public API: it still gives every chunk for people to read."""
    plan = make_plan(run_id="r", sketch="s.py", total_frames=10, frames_per_job=4,
                     video=VideoSettings(width=64, height=48))
    assert plan.to_dict(chunks=True)["chunks"] == [[0, 4], [4, 8], [8, 10]]
    assert "chunks" not in plan.to_dict() and "chunks" not in json.loads(plan.to_json())
    assert Plan.from_dict(plan.to_dict(chunks=True)) == plan
