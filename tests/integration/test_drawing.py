"""A segment drawn by several processes (steps/_drawing.py): a video shorter than x264's key-frame
interval is one segment, so on 2+ workers its frames are drawn side by side while the job's own
process encodes them. Checked as a user would: the decoded video frame by frame against the
sketch, the processes that drew it, the job log, and the faults injected for real (a drawer
killed, a sketch that raises or hangs in a drawer, Ctrl-C) leave no process behind."""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import psutil
import pytest

from framefarm.video import KEYINT, inspect_video
from tests.conftest import run_cli
from tests.integration.test_local_faults import (
    SKETCH,
    assert_video,
    farm,  # noqa: F401 (a fixture)
    gone,
    jobs,
    start,
    status,
    wait_for_value,
)

pytestmark = pytest.mark.integration

W, H = 64, 48

# The fault sketch, plus: every frame says which process drew it.
DRAWN_BY = SKETCH.replace("    def render(ctx):\n        f = ctx.frame\n", """    def render(ctx):
        f = ctx.frame
        with open(os.path.join(os.environ["MARKERS"], f"drawn-{f}-{os.getpid()}"), "w"):
            pass
        if f == int(os.environ.get("RAISE_AT", -1)):
            raise RuntimeError(f"no frame {f} today")
        if f == int(os.environ.get("PID_HANG_AT", -1)) and once("pid-hang"):
            with open(os.path.join(os.environ["MARKERS"], "hanging"), "w") as out:
                out.write(str(os.getpid()))
            time.sleep(3600)
""")
assert DRAWN_BY != SKETCH


def render_args(run_id: str, frames: int = 40, *extra: str, workers: int = 3) -> list[str]:
    """Auto chunking: fewer frames than KEYINT make one segment, drawn by `workers`."""
    return ["render", "sketch.py", "-o", f"{run_id}.mp4", "--frames", str(frames), "--size",
            f"{W}x{H}", "--run-id", run_id, "--workers", str(workers), *extra]


def drawers(markers: Path) -> dict[int, set[int]]:
    """Which frames each process drew, from the sketch's own notes."""
    seen: dict[int, set[int]] = {}
    for name in os.listdir(markers):
        if name.startswith("drawn-"):
            _, frame, pid = name.split("-")
            seen.setdefault(int(pid), set()).add(int(frame))
    return seen


@pytest.fixture
def sketch(workdir: Path, write_sketch: Callable[..., Path],
           farm: Callable[..., dict[str, str]]) -> Path:  # noqa: F811
    """DRAWN_BY as sketch.py, over the fault sketch `farm` writes."""
    return write_sketch(DRAWN_BY, "sketch.py")


def markers_of(env: dict[str, str]) -> Path:
    return Path(env["MARKERS"])


def test_one_segment_is_drawn_by_every_worker(workdir: Path, sketch: Path,
                                              farm: Callable[..., dict[str, str]]) -> None:  # noqa: F811
    env = farm(SLOW=0.01)
    done = run_cli(*render_args("wide", 60), cwd=workdir, env=env)
    assert done.returncode == 0, done.stderr
    assert_video(workdir / "wide.mp4", 60)
    renders = [j for j in jobs(status("wide", workdir)) if j["job"].startswith("render")]  # type: ignore[attr-defined]
    assert [j["job"] for j in renders] == ["render:0"]
    worker = int(str(renders[0]["runner_id"]).removeprefix("pid:"))
    by = drawers(markers_of(env))
    # Frames this small are quick enough that the plan times one (the middle one) to size chunks.
    by = {pid: frames for pid, frames in by.items() if frames != {30}}
    # Three processes drew, none of them the job's own (it encodes), each frame exactly once.
    assert len(by) == 3 and worker not in by, by
    assert sorted(f for frames in by.values() for f in frames) == list(range(60))
    assert all(len(frames) >= 5 for frames in by.values()), "frames are taken, not dealt: " \
        "but every drawer should get a share of 60 equal frames"
    check = inspect_video(workdir / "wide.mp4", rate=Fraction(30))
    assert check.key_frames == 1  # one segment, one key frame: as one long encode has


def test_workers_are_shared_among_the_chunks_left(workdir: Path, sketch: Path,
                                                 farm: Callable[..., dict[str, str]]) -> None:  # noqa: F811
    """2 chunks on 3 workers: the first gets 2 CPUs (2 drawers), the second 1 (its worker draws)."""
    env = farm()
    frames = 2 * KEYINT
    done = run_cli(*render_args("shared", frames), "--per-job", str(KEYINT), cwd=workdir, env=env)
    assert done.returncode == 0, done.stderr
    assert_video(workdir / "shared.mp4", frames)
    workers = {int(str(j["runner_id"]).removeprefix("pid:")): j["job"]
               for j in jobs(status("shared", workdir)) if str(j["job"]).startswith("render")}
    by = drawers(markers_of(env))
    chunk0 = {pid for pid, drawn in by.items() if drawn <= set(range(KEYINT))}
    chunk1 = {pid for pid, drawn in by.items() if drawn <= set(range(KEYINT, frames))}
    assert len(chunk0) == 2 and not chunk0 & set(workers), by
    assert len(chunk1) == 1 and workers[chunk1.pop()] == "render:1"


def test_kept_frames_are_stored_by_the_drawers(workdir: Path, sketch: Path,
                                               farm: Callable[..., dict[str, str]]) -> None:  # noqa: F811
    import numpy as np
    from PIL import Image

    from tests.integration.test_local_faults import expected

    done = run_cli(*render_args("kept", 12), "--keep-frames", cwd=workdir, env=farm())
    assert done.returncode == 0, done.stderr
    folder = workdir / "framefarm-data" / "runs" / "kept" / "frames"
    pngs = sorted(folder.iterdir())
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(12)]
    for i, png in enumerate(pngs):
        assert np.array_equal(np.asarray(Image.open(png)), expected(i))


def test_a_killed_drawer_costs_one_attempt(workdir: Path, sketch: Path,
                                           farm: Callable[..., dict[str, str]]) -> None:  # noqa: F811
    env = farm(PID_HANG_AT=21)
    proc = start(*render_args("killd", 50), cwd=workdir, env=env)
    hanging = markers_of(env) / "hanging"
    pid = wait_for_value(lambda: int(hanging.read_text()) if hanging.exists() and
                         hanging.read_text() else None)
    victim = psutil.Process(pid)
    assert victim.ppid() != proc.pid  # a drawer: a child of the worker, not of the driver
    victim.send_signal(signal.SIGKILL)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert_video(workdir / "killd.mp4", 50)
    attempts = [j for j in jobs(status("killd", workdir)) if j["job"] == "render:0"]
    assert [j["status"] for j in attempts] == ["FAILED", "SUCCEEDED"]
    error = str(attempts[0]["error"])
    assert error.startswith("chunk 0 (frames 0-49)"), error
    assert f"its drawing process, pid {pid}, was killed by SIGKILL" in error
    assert "while drawing frame 21" in error
    assert "retrying (attempt 2 of 3)" in err


def test_a_sketch_that_raises_in_a_drawer_names_its_frame(workdir: Path, sketch: Path,
                                                          farm: Callable[..., dict[str, str]]) -> None:  # noqa: F811
    done = run_cli(*render_args("raise", 30), cwd=workdir, env=farm(RAISE_AT=17))
    assert done.returncode == 2, done.stderr
    assert "failed on frame 17: RuntimeError: no frame 17 today" in done.stderr
    assert "Traceback" not in done.stderr.splitlines()[0]
    attempts = [j for j in jobs(status("raise", workdir)) if j["job"] == "render:0"]
    assert [j["status"] for j in attempts] == ["FAILED"]  # the sketch's error: not retried
    assert "sketch.py" in str(attempts[0]["error"])  # with the sketch's own traceback


def test_a_hung_drawer_times_out_and_leaves_nothing(workdir: Path, sketch: Path,
                                                   farm: Callable[..., dict[str, str]]) -> None:  # noqa: F811
    env = farm(PID_HANG_AT=9)
    began = time.monotonic()
    done = run_cli(*render_args("hangd", 30), "--frame-timeout", "2", cwd=workdir, env=env)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - began < 40
    assert_video(workdir / "hangd.mp4", 30)
    attempts = [j for j in jobs(status("hangd", workdir)) if j["job"] == "render:0"]
    assert [j["status"] for j in attempts] == ["FAILED", "SUCCEEDED"]
    assert "frame 9 took longer than the frame timeout of 2 s" in str(attempts[0]["error"])
    hung = int((markers_of(env) / "hanging").read_text())
    assert gone([hung]), "the hung drawer outlived its job"


def test_ctrl_c_ends_every_drawer(workdir: Path, sketch: Path,
                                  farm: Callable[..., dict[str, str]]) -> None:  # noqa: F811
    env = farm(SLOW=0.05)
    proc = start(*render_args("ctrlcd", 200), cwd=workdir, env=env)
    tree = wait_for_value(lambda: found if len(found := psutil.Process(proc.pid).children(
        recursive=True)) >= 4 else None)  # a worker and its 3 drawers
    pids = [p.pid for p in tree]
    wait_for_value(lambda: len(drawers(markers_of(env))) >= 3 or None)
    os.killpg(proc.pid, signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    deadline = time.monotonic() + 5
    while not gone(pids):
        assert time.monotonic() < deadline, "drawers outlived Ctrl-C"
        time.sleep(0.05)
    assert "framefarm resume ctrlcd" in err


def test_segments_of_a_long_video_have_no_more_key_frames_than_one_encode(
        workdir: Path, write_sketch: Callable[..., Path], tmp_path: Path) -> None:
    """3 segments of 2 * KEYINT - 1 frames each: one encode of the same frames puts a key frame
    every KEYINT frames; the segments together have no more. (A scene cut costs a key frame in
    both; one that falls near a segment's start costs the segments one more.)"""
    import numpy as np

    from framefarm.model import VideoSettings
    from framefarm.video import SegmentWriter

    write_sketch("""
        import numpy as np
        def render(ctx):
            img = np.full((ctx.height, ctx.width, 3), 90, np.uint8)
            img[8:24, round(16 + 12 * np.sin(ctx.frame / 40))] = 250
            return img
    """)
    frames = 3 * (2 * KEYINT - 1)
    done = run_cli("render", "sketch.py", "-o", "long.mp4", "--frames", str(frames), "--size",
                   "32x32", "--per-job", str(2 * KEYINT - 1), "--workers", "2", cwd=workdir)
    assert done.returncode == 0, done.stderr
    joined = inspect_video(workdir / "long.mp4", rate=Fraction(30))
    assert joined.info.frames == frames and sorted(joined.positions) == list(range(frames))
    one = tmp_path / "one.mp4"
    with SegmentWriter(one, video=VideoSettings(width=32, height=32, fps="30")) as writer:
        for f in range(frames):
            img = np.full((32, 32, 3), 90, np.uint8)
            img[8:24, round(16 + 12 * np.sin(f / 40))] = 250
            writer.write(img)
    single = inspect_video(one, rate=Fraction(30))
    assert single.key_frames >= 6  # every KEYINT frames at least
    assert 3 <= joined.key_frames <= single.key_frames


def test_max_memory_caps_the_chunks_encoding_at_once(workdir: Path, sketch: Path,
                                                     farm: Callable[..., dict[str, str]]) -> None:  # noqa: F811
    """Room for one encoder and 3 drawers: the 3 chunks run one after another, each drawn by
    all 3 workers, and the video is whole."""
    from framefarm.steps._sizing import drawer_memory, encoder_memory

    env = farm()
    budget = encoder_memory(width=W, height=H, preset="fast") + 3 * drawer_memory(width=W, height=H)
    done = run_cli(*render_args("memory", 3 * KEYINT), "--per-job", str(KEYINT),
                   "--max-memory", str(budget + 1000), cwd=workdir, env=env)
    assert done.returncode == 0, done.stderr
    assert "--max-memory" in done.stderr and "fits 1 chunks encoding at once" in done.stderr
    assert_video(workdir / "memory.mp4", 3 * KEYINT)
    renders = sorted((str(j["started_at"]), str(j["stopped_at"]))
                     for j in jobs(status("memory", workdir)) if str(j["job"]).startswith("render"))
    assert len(renders) == 3
    assert all(stop <= start for (_, stop), (start, _) in itertools.pairwise(renders)), renders
    workers = {int(str(j["runner_id"]).removeprefix("pid:"))
               for j in jobs(status("memory", workdir)) if str(j["job"]).startswith("render")}
    by = drawers(markers_of(env))
    assert len(by) == 9 and not set(by) & workers  # 3 drawers for each of the 3 chunks


def test_max_memory_too_small_is_one_line(workdir: Path, sketch: Path,
                                          farm: Callable[..., dict[str, str]]) -> None:  # noqa: F811
    done = run_cli(*render_args("tiny", 30), "--max-memory", "1M", cwd=workdir, env=farm())
    assert done.returncode == 2
    line = done.stderr.strip().splitlines()[-1]
    assert "--max-memory (1 MB) is less than one chunk needs at 64x48" in line
    assert "Traceback" not in done.stderr
    bad = run_cli(*render_args("bad", 30), "--max-memory", "lots", cwd=workdir, env=farm())
    assert bad.returncode == 2 and "--max-memory 'lots' is not an amount of memory" in bad.stderr
