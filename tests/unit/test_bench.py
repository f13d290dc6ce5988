"""The benchmark harness's pure pieces: ratios, the limit, which targets pass, the report."""

from __future__ import annotations

from pathlib import Path

from bench.run import Measure, Report, limit_seconds, markdown, memory_flat, ratio, targets, x264_version


def report(ff_plasma: float, naive: float, limit: float, one_frame: float, plan: float,
           memory: tuple[float, float]) -> Report:
    r = Report()
    r.results["plasma"] = [Measure("naive", naive, naive, 70, frames=240),
                           Measure("pool", 6.0, 9.0, 100, 60, frames=240),
                           Measure("framefarm", ff_plasma, 8.0, 80, 75, frames=240),
                           Measure("limit", 9.0, 8.0, 90, frames=240)]
    r.results["one_frame"] = [Measure("framefarm", one_frame, 0.5, 60, frames=1)]
    r.limits["plasma"] = limit
    r.splits["plasma"] = {"sketch": 1.2, "convert": 0.4, "encode": 6.2}
    r.plan = {"plan, 1 frame(s) per job (make_plan + plan.json)": plan,
              "walk all 1,000,000 chunks": 5.0,
              "plan step, --per-job auto (sketch loaded, stored, plan.json written)": 0.02}
    r.memory = {240: memory[0], 960: memory[1]}
    return r


def verdicts(r: Report) -> dict[str, bool]:
    return {target: ok for target, _, ok in targets(r)}


def test_ratio_is_how_many_times_faster() -> None:
    assert ratio(10.0, 2.0) == 5.0
    assert ratio(1.0, 0.0) == float("inf")


def test_the_limit_spreads_every_cpu_second_over_the_cores() -> None:
    assert limit_seconds({"sketch": 1.0, "convert": 0.5, "encode": 6.5}, cores=2) == 4.0
    assert limit_seconds({"sketch": 3.0}, cores=0) == 3.0


def test_worker_memory_is_flat_within_ten_percent_or_15_mb() -> None:
    assert memory_flat(90, 104)  # +14 MB
    assert memory_flat(300, 329)  # +9.7 %
    assert not memory_flat(90, 106)
    assert not memory_flat(300, 340)
    assert memory_flat(100, 80)


def test_every_target_passes_when_met() -> None:
    found = verdicts(report(ff_plasma=4.0, naive=21.0, limit=3.9, one_frame=0.6, plan=0.7,
                            memory=(120, 125)))
    assert found == {
        "≥ 5x faster than naive on plasma": True,
        "not slower than hand-written parallel on plasma": True,
        "wall ≤ 1.15x the limit on plasma": True,
        "1-frame video ≤ 1.0 s wall": True,
        "planning 1,000,000 frames ≤ 1 s": True,  # the chunk walk is not planning
        "worker peak memory flat from 240 to 960 frames": True,
    }


def test_each_target_fails_on_its_own() -> None:
    found = verdicts(report(ff_plasma=7.0, naive=21.0, limit=4.0, one_frame=1.2, plan=1.5,
                            memory=(120, 240)))
    assert not any(found.values())


def test_markdown_shows_the_limit_its_split_and_the_verdicts() -> None:
    text = markdown(report(ff_plasma=4.0, naive=21.0, limit=3.9, one_frame=0.6, plan=0.7,
                           memory=(120, 125)), quick=False)
    assert "| the limit (CPU s ÷ cores) | 3.90 | 8.00 | 90 |  | 0.97 |" in text
    assert "| naive | 21.00 | 21.00 | 70 |  | 5.25 |" in text
    assert "| framefarm | 4.00 | 8.00 | 80 | 75 | 1.00 |" in text
    assert "sketch 1.20, convert 0.40, encode 6.20 (per frame 32.5 ms)" in text
    assert text.count("PASS") == 6 and "FAIL" not in text


def test_x264_version_is_read_from_the_stream(tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\0\0mdat x264 - core 165 r3222 b35605a - H.264/MPEG-4 AVC codec")
    assert x264_version(video) == "x264 core 165 r3222 b35605a"
    video.write_bytes(b"no encoder here")
    assert x264_version(video) == "unknown"
