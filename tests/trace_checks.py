"""What a run's trace must look like, whoever ran it: the checks the tracing tests share."""

from __future__ import annotations

from collections import Counter
from typing import Any


def check_one_tree(spans: list[dict[str, Any]], *, root: str = "run") -> dict[str, dict[str, Any]]:
    """One trace id, one root (named `root`), and every parent present; returns spans by id."""
    by_id = {s["span_id"]: s for s in spans}
    assert len(by_id) == len(spans), "a span arrived twice"
    assert {s["trace_id"] for s in spans} == {spans[0]["trace_id"]}
    roots = [s for s in spans if s["parent_id"] is None]
    assert [r["name"] for r in roots] == [root]
    orphans = [s["name"] for s in spans if s["parent_id"] is not None and s["parent_id"] not in by_id]
    assert orphans == []
    return by_id


def check_run_shape(spans: list[dict[str, Any]], by_id: dict[str, dict[str, Any]], *,
                    frames: int, per_job: int) -> None:
    """The spans of a run of `frames` frames in chunks of `per_job`: the run, one plan, a render
    per chunk with a frame span per frame of its chunk, one encode; every job a child of the run."""
    names = Counter(s["name"] for s in spans)
    chunks = -(-frames // per_job)
    assert (names["run"], names["plan"], names["render"], names["encode"]) == (1, 1, chunks, 1)
    assert names["frame"] == frames
    run = next(s for s in spans if s["name"] == "run")
    renders = sorted((s for s in spans if s["name"] == "render"),
                     key=lambda s: s["attributes"]["framefarm.chunk"])
    for i, render in enumerate(renders):
        attributes = render["attributes"]
        assert render["parent_id"] == run["span_id"]
        assert (attributes["framefarm.chunk"], attributes["framefarm.frame_start"],
                attributes["framefarm.frame_stop"]) == (i, i * per_job, min((i + 1) * per_job, frames))
        assert attributes["framefarm.attempt"] == 1
        assert attributes["framefarm.run_id"] == run["attributes"]["framefarm.run_id"]
        assert attributes["host.name"]
    for frame in (s for s in spans if s["name"] == "frame"):
        parent = by_id[frame["parent_id"]]
        number = frame["attributes"]["framefarm.frame"]
        assert parent["name"] == "render"
        assert parent["attributes"]["framefarm.frame_start"] <= number < parent["attributes"][
            "framefarm.frame_stop"]
        assert frame["attributes"]["framefarm.render_seconds"] > 0
        assert frame["attributes"]["framefarm.encode_seconds"] >= 0
    assert sorted(s["attributes"]["framefarm.frame"] for s in spans if s["name"] == "frame") == list(
        range(frames))
    for name in ("plan", "encode"):
        assert next(s for s in spans if s["name"] == name)["parent_id"] == run["span_id"]
    assert any(s["name"] == "storage.put_file" for s in spans)
    assert any(s["name"] == "joblog.start_job" for s in spans)
