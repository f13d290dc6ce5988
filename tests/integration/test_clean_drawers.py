"""Drawers start clean (steps/_drawing.py, framefarm._procs): never as forks of their job, which
has threads. The first two tests inject, for real, a state a fork would copy without the thread
behind it, and check that the chunks are drawn anyway, in bounded time, into a video of the
sketch's own frames.

The first is the cause of a render attempt lost about 1 run in 7 on Temporal: a job process
whose chunk failed (the sketch raised) keeps that chunk's encoder as garbage, caught in the
error's traceback, with x264's threads still parked on their condition variables; its next
chunk forked its drawers, one of them ran the garbage collector (allocating, as any frame does)
and hung for ever in x264_encoder_close (pthread_cond_destroy, waiting for threads a fork does
not copy), and the job waited on it until its heartbeat timed out. Here the sketch turns the
collector off where it is set up and collects in every frame it draws, so a drawer forked from
the job would hang every time, not when the collector happens to run first.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from framefarm import config
from framefarm.joblog import open_joblog
from tests.conftest import run_cli
from tests.integration.test_local_faults import SKETCH, H, W, assert_video

pytestmark = pytest.mark.integration

# The fault sketch's frames (assert_video checks them), from a sketch with a fault of its own.
FRAMES = SKETCH[SKETCH.index("        y, x = np.mgrid"):]
assert FRAMES.lstrip().startswith("y, x") and "return np.dstack" in FRAMES

COLLECTS_IN_DRAWERS = """
    import gc, os, time
    import numpy as np

    def setup(ctx):
        gc.disable()  # where the sketch is set up, garbage waits (the job's, if it is set up there)

    def render(ctx):
        f = ctx.frame
        failed = os.path.join(os.environ.get("MARKERS", "."), "failed")
        if f == 5 and os.environ.get("MARKERS") and not os.path.exists(failed):
            open(failed, "w").close()
            time.sleep(0.3)  # once frames 0-4 are in the encoder
            raise ValueError("frame 5 fails once")
        gc.collect()  # and the process that draws collects it
""" + FRAMES

HOLDS_A_LOCK = """
    import threading
    import numpy as np

    def setup(ctx):
        # A library's worker thread (a GL driver's, say): it holds its lock but while a frame
        # asks for it. In a fork of this process the lock stays held, by nobody.
        lock, asked, taken = threading.Lock(), threading.Event(), threading.Event()

        def worker():
            while True:
                with lock:
                    asked.wait()
                    asked.clear()
                taken.wait()  # until the frame holds it
                taken.clear()

        threading.Thread(target=worker, daemon=True).start()
        return lock, asked, taken

    def render(ctx):
        lock, asked, taken = ctx.state
        asked.set()
        with lock:
            taken.set()
            f = ctx.frame
""" + "\n".join("    " + line if line.strip() else line for line in FRAMES.splitlines())

# A worker process as the local and Temporal runners run one (its memory tuned as theirs is,
# which keeps x264's threads of a failed chunk alive): every job through the job contract, one
# after another, in the same process; how each went, as JSON.
JOB_PROCESS = """
import json, sys
from framefarm.runners.local import _start_worker, run_contract_job

_start_worker(False)
outcomes = [run_contract_job(env) for env in json.loads(sys.argv[1])]
print(json.dumps([[o.job, o.exit_code, o.error.splitlines()[0] if o.error else ""] for o in outcomes]))
"""


def run_bounded(args: list[str], *, cwd: Path, env: dict[str, str],
                timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run `args` in a process group of its own; a hang costs `timeout` s and leaves nothing."""
    began = time.monotonic()
    proc = subprocess.Popen(args, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"still running after {timeout:g} s (a drawer hung?)\n{err[-3000:]}")
    return subprocess.CompletedProcess(args, proc.returncode, out, err), time.monotonic() - began


def test_after_a_failed_chunk_the_next_ones_drawers_inherit_no_encoder(
        workdir: Path, write_sketch: Callable[..., Path], tmp_path: Path) -> None:
    """Chunk 0 fails on frame 5 (once), chunks 1 and 2 are drawn by 2 processes each, chunk 0
    is rendered again, and the video is encoded: all in one worker process, in bounded time."""
    sketch = write_sketch(COLLECTS_IN_DRAWERS, "collects.py")
    markers = tmp_path / "markers"
    markers.mkdir()
    base = {config.STORAGE: (workdir / "data").as_uri(), config.JOBLOG: f"sqlite:///{workdir}/log.db",
            config.RUN_ID: "gc", config.FRAME_TIMEOUT: "20"}
    plan = {**base, config.JOB_TYPE: "plan", config.SKETCH: str(sketch), config.TOTAL_FRAMES: "18",
            config.FRAMES_PER_RENDER_JOB: "6", config.WIDTH: str(W), config.HEIGHT: str(H),
            config.OUTPUT: str(workdir / "gc.mp4")}
    renders = [{**base, config.JOB_TYPE: "render", config.ARRAY_INDEX: str(i), config.JOB_CPUS: "2"}
               for i in (0, 1, 2, 0)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRAMEFARM_", "OTEL_"))}
    jobs = [plan, *renders, {**base, config.JOB_TYPE: "encode"}]
    done, seconds = run_bounded([sys.executable, "-c", JOB_PROCESS, json.dumps(jobs)], cwd=workdir,
                                env={**env, "MARKERS": str(markers)}, timeout=90)
    assert done.returncode == 0, done.stderr
    outcomes = json.loads(done.stdout.splitlines()[-1])
    assert [(job, code) for job, code, _ in outcomes] == [
        ("plan", 0), ("render:0", 2), ("render:1", 0), ("render:2", 0), ("render:0", 0),
        ("encode", 0)], outcomes
    assert "failed on frame 5: ValueError: frame 5 fails once" in outcomes[1][2]
    assert seconds < 60  # a drawer that hung would have held its job for the frame timeout
    assert_video(workdir / "gc.mp4", 18)


def test_a_sketch_whose_setup_starts_a_thread_holding_a_lock_is_drawn_by_every_worker(
        workdir: Path, write_sketch: Callable[..., Path]) -> None:
    """One segment on 2 workers: its job draws in 2 processes, each of which sets the sketch up
    itself; a drawer forked after the job's own setup would wait for the lock for ever."""
    write_sketch(HOLDS_A_LOCK, "locked.py")
    began = time.monotonic()
    done = run_cli("render", "locked.py", "-o", "locked.mp4", "--frames", "30", "--size",
                   f"{W}x{H}", "--run-id", "locked", "--workers", "2", "--frame-timeout", "10",
                   cwd=workdir, timeout=120)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - began < 60
    assert_video(workdir / "locked.mp4", 30)
    log = open_joblog(config.default_joblog_url(workdir))
    assert [(j.job, j.status) for j in log.jobs("locked") if j.kind == "render"] == [
        ("render:0", "SUCCEEDED")]  # one segment, no retry


def test_drawers_start_where_the_temporary_folder_is_too_long_for_a_socket(
        workdir: Path, write_sketch: Callable[..., Path]) -> None:
    """The forkserver listens on a Unix socket in multiprocessing's temporary folder (107 bytes
    at most): a worker's scratch folder, named after a long run id, must not hold it."""
    sketch = write_sketch(COLLECTS_IN_DRAWERS, "collects.py")
    deep = workdir / ("t" * 60) / ("u" * 30)
    deep.mkdir(parents=True)
    code = """
import sys
from fractions import Fraction
from framefarm.steps._drawing import Drawers, DrawerSketch

sketch = DrawerSketch(location=sys.argv[1], width=32, height=32, rate=Fraction(30), total_frames=9)
drawers = Drawers(sketch, 2)
print(sum(1 for _ in drawers.draw(range(9))))
drawers.close()
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEFARM_")}
    done, _ = run_bounded([sys.executable, "-c", code, str(sketch)], cwd=workdir,
                          env={**env, "TMPDIR": str(deep)}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["9"]
