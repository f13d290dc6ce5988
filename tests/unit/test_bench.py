"""The benchmark harness's arithmetic: ratios, the limit, and which targets pass."""

from __future__ import annotations

from bench.run import Measure, Report, markdown, ratio, targets


def report(ff_plasma: float, naive: float, limit: float, one_frame: float, plan: float,
           memory: tuple[float, float]) -> Report:
    r = Report()
    r.results["plasma"] = [Measure("naive", naive, naive, 70), Measure("pool", 6.0, 9.0, 100),
                           Measure("framefarm", ff_plasma, 8.0, 80), Measure("limit", 9.0, 8.0, 90)]
    r.results["one_frame"] = [Measure("framefarm", one_frame, 0.5, 60)]
    r.limits["plasma"] = limit
    r.plan = {"plan, 1 frame(s) per job": plan, "walk all 1,000,000 chunks": 5.0}
    r.memory = {240: memory[0], 960: memory[1]}
    return r


def verdicts(r: Report) -> dict[str, bool]:
    return {target: ok for target, _, ok in targets(r)}


def test_ratio_is_how_many_times_faster() -> None:
    assert ratio(10.0, 2.0) == 5.0
    assert ratio(1.0, 0.0) == float("inf")


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


def test_markdown_shows_the_limit_and_the_verdicts() -> None:
    text = markdown(report(ff_plasma=4.0, naive=21.0, limit=3.9, one_frame=0.6, plan=0.7,
                           memory=(120, 125)), quick=False)
    assert "| the limit (CPU s ÷ cores) | 3.90 |" in text
    assert "| naive | 21.00 | 21.00 | 70 | 5.25 |" in text
    assert text.count("PASS") == 6 and "FAIL" not in text
