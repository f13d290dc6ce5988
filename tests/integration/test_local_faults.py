"""Faults a render farm sees every day, injected for real on the local runner: a worker killed
mid-chunk, the whole command killed, Ctrl-C, `framefarm cancel` from another shell, a frame
that never returns (in Python and in native code), a segfault, corrupted and swapped segments,
two renders of one run at once. Each test checks what a user would: the decoded video frame by
frame against the sketch, the job log read back, the process tree, the temporary folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import av
import numpy as np
import psutil
import pytest

from framefarm.joblog import open_joblog
from framefarm.model import JobRecord
from tests.conftest import framefarm_command, psnr, run_cli

pytestmark = pytest.mark.integration
T = TypeVar("T")

W, H = 64, 48

# A frame is a pattern only its index draws; SLOW makes each frame take that long, and a marker
# file (made on first use, so a retried attempt renders normally) triggers one fault per run.
SKETCH = """
    import ctypes, os, re, sys, time
    import numpy as np

    SLOW = float(os.environ.get("SLOW", "0"))

    def once(name):
        marker = os.path.join(os.environ["MARKERS"], name)
        if os.path.exists(marker):
            return False
        open(marker, "w").close()
        return True

    def render(ctx):
        f = ctx.frame
        if f == int(os.environ.get("SEGV_AT", -1)) and once("segv"):
            ctypes.string_at(0)
        if f == int(os.environ.get("EXIT_AT", -1)) and once("exit"):
            sys.exit(3)
        if f == int(os.environ.get("HANG_AT", -1)) and once("hang"):
            time.sleep(3600)
        if f == int(os.environ.get("SPIN_AT", -1)) and once("spin"):
            re.match(r"(a+)+$", "a" * 64 + "b")  # native code that never lets go of the GIL
        if SLOW:
            time.sleep(SLOW)
        y, x = np.mgrid[0:ctx.height, 0:ctx.width]
        return np.dstack([128 + 100 * np.sin(x / 9 + f / 4), 128 + 100 * np.cos(y / 7 - f / 6),
                          np.full(x.shape, (f * 37) % 200 + 28)]).astype(np.uint8)
"""


def expected(frame: int) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    return np.dstack([128 + 100 * np.sin(x / 9 + frame / 4), 128 + 100 * np.cos(y / 7 - frame / 6),
                      np.full(x.shape, (frame * 37) % 200 + 28)]).astype(np.uint8)


def assert_video(path: Path, frames: int) -> None:
    """The video holds exactly the sketch's frames, in order."""
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == frames
    worst = min(psnr(img, expected(i)) for i, img in enumerate(decoded))
    # Each frame must match its own index far better than its neighbours'.
    assert worst > 28, f"a frame differs from the sketch: worst PSNR {worst:.1f} dB"
    assert psnr(decoded[frames // 2], expected(frames // 2 + 1)) < worst - 5


@pytest.fixture
def farm(workdir: Path, write_sketch: Callable[..., Path],
         tmp_path: Path) -> Iterator[Callable[..., dict[str, str]]]:
    """The sketch in the working folder, and the environment for its faults: markers and a
    private TMPDIR (checked empty at the end: no temporary file may be left behind)."""
    write_sketch(SKETCH, "sketch.py")
    markers = tmp_path / "markers"
    markers.mkdir()
    scratch = tmp_path / "tmp"
    scratch.mkdir()

    def env(**faults: object) -> dict[str, str]:
        return {"MARKERS": str(markers), "TMPDIR": str(scratch),
                **{k: str(v) for k, v in faults.items()}}

    yield env
    assert sorted(os.listdir(scratch)) == [], "temporary files were left behind"


def start(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """`framefarm ARGS` started in its own process group, as a terminal would run it."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("FRAMEFARM_", "OTEL_"))}
    return subprocess.Popen([*framefarm_command(), *args], cwd=cwd, env={**full, **env},
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def render_args(run_id: str, frames: int = 60, per_job: int = 10, *extra: str) -> list[str]:
    return ["render", "sketch.py", "-o", f"{run_id}.mp4", "--frames", str(frames), "--per-job",
            str(per_job), "--size", f"{W}x{H}", "--run-id", run_id, "--workers", "2", *extra]


def status(run_id: str, cwd: Path) -> dict[str, object]:
    done = run_cli("status", run_id, "--json", cwd=cwd)
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout)
    return report


def jobs(report: dict[str, object]) -> list[dict[str, object]]:
    return list(report["jobs"])  # type: ignore[call-overload]


def wait_until(check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def records(cwd: Path, run_id: str) -> list[JobRecord]:
    """The run's job records, read straight from the job log's SQLite file."""
    path = cwd / "framefarm-data" / "joblog.sqlite3"
    if not path.exists():
        return []
    joblog = open_joblog(f"sqlite:///{path}")
    try:
        return joblog.jobs(run_id)
    finally:
        joblog.close()


def wait_for_value(get: Callable[[], T | None], timeout: float = 60) -> T:
    deadline = time.monotonic() + timeout
    while (value := get()) is None:
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)
    return value


def frames_done(cwd: Path, run_id: str) -> int:
    latest = {r.job: r for r in records(cwd, run_id)}
    return sum(r.frames for r in latest.values() if r.kind == "render")


def busy_worker(cwd: Path, run_id: str, process: subprocess.Popen[str]) -> psutil.Process | None:
    """A worker of `process` in the middle of a chunk (a few frames done, more to go)."""
    mine = {p.pid for p in workers_of(process)}
    for r in records(cwd, run_id):
        pid = int(r.runner_id.removeprefix("pid:")) if r.runner_id.startswith("pid:") else 0
        if r.status == "RUNNING" and 2 <= r.frames <= 6 and pid in mine:
            return psutil.Process(pid)
    return None


def workers_of(process: subprocess.Popen[str]) -> list[psutil.Process]:
    return psutil.Process(process.pid).children(recursive=True)


def gone(pids: list[int]) -> bool:
    return not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in pids)


def test_a_killed_worker_costs_only_its_chunk(workdir: Path, farm: Callable[..., dict[str, str]]) -> None:
    proc = start(*render_args("killw", 80), cwd=workdir, env=farm(SLOW=0.08))
    victim = wait_for_value(lambda: busy_worker(workdir, "killw", proc))
    victim.send_signal(signal.SIGKILL)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert_video(workdir / "killw.mp4", 80)
    report = status("killw", workdir)
    assert report["status"] == "SUCCEEDED"
    records = jobs(report)
    assert not [j for j in records if j["status"] == "RUNNING"]
    lost = [j for j in records if j["status"] == "FAILED"]
    assert len(lost) == 1
    assert f"pid {victim.pid}" in str(lost[0]["error"])
    assert "killed by SIGKILL" in str(lost[0]["error"]) and "while rendering frame" in str(lost[0]["error"])
    again = [j for j in records if j["job"] == lost[0]["job"]]
    assert [j["status"] for j in again] == ["FAILED", "SUCCEEDED"]
    assert "retrying (attempt 2 of 3)" in err


def test_segfault_and_sys_exit_in_a_sketch_are_retried(workdir: Path,
                                                       farm: Callable[..., dict[str, str]]) -> None:
    done = run_cli(*render_args("crash"), cwd=workdir, env=farm(SEGV_AT=23, EXIT_AT=47))
    assert done.returncode == 0, done.stderr
    assert_video(workdir / "crash.mp4", 60)
    failed = {j["job"]: str(j["error"]) for j in jobs(status("crash", workdir))
              if j["status"] == "FAILED"}
    assert set(failed) == {"render:2", "render:4"}
    # One line each: the chunk, its frames, the frame and how the process ended.
    assert failed["render:2"].startswith("chunk 2 (frames 20-29): lost: its worker process")
    assert "SIGSEGV" in failed["render:2"] and "frame 23" in failed["render:2"]
    assert "chunk 4 (frames 40-49), at frame 47: sys.exit(3)" in failed["render:4"]
    assert "exited with code 3" in done.stderr


def test_a_sketch_that_raises_is_not_retried(workdir: Path, write_sketch: Callable[..., Path]) -> None:
    write_sketch("""
        import numpy as np
        def render(ctx):
            if ctx.frame == 13:
                raise ValueError("no")
            return np.zeros((ctx.height, ctx.width, 3), np.uint8)
    """)
    done = run_cli(*render_args("raises", 30), cwd=workdir)
    assert done.returncode == 2
    assert [j["attempt"] for j in jobs(status("raises", workdir)) if j["job"] == "render:1"] == [1]


def test_a_frame_that_never_returns_times_out(workdir: Path,
                                              farm: Callable[..., dict[str, str]]) -> None:
    began = time.monotonic()
    done = run_cli(*render_args("hang", 40), "--frame-timeout", "2", cwd=workdir,
                   env=farm(HANG_AT=17))
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - began < 30
    assert_video(workdir / "hang.mp4", 40)
    records = [j for j in jobs(status("hang", workdir)) if j["job"] == "render:1"]
    assert [j["status"] for j in records] == ["FAILED", "SUCCEEDED"]
    assert "frame 17 took longer than the frame timeout of 2 s" in str(records[0]["error"])


def test_a_frame_stuck_in_native_code_is_killed(workdir: Path,
                                                farm: Callable[..., dict[str, str]]) -> None:
    """Its own watch cannot run while native code holds the interpreter: the runner kills it."""
    done = run_cli(*render_args("spin", 30), "--frame-timeout", "1", cwd=workdir,
                   env=farm(SPIN_AT=5))
    assert done.returncode == 0, done.stderr
    assert_video(workdir / "spin.mp4", 30)
    records = [j for j in jobs(status("spin", workdir)) if j["job"] == "render:0"]
    assert [j["status"] for j in records] == ["FAILED", "SUCCEEDED"]
    assert "frame 5 took longer than the frame timeout of 1 s" in str(records[0]["error"])
    assert "was killed" in str(records[0]["error"])


def test_ctrl_c_stops_at_once_and_resume_finishes(workdir: Path,
                                                 farm: Callable[..., dict[str, str]]) -> None:
    proc = start(*render_args("ctrlc", 200), cwd=workdir, env=farm(SLOW=0.05))
    wait_until(lambda: frames_done(workdir, "ctrlc") >= 40)
    pids = [p.pid for p in workers_of(proc)]
    assert pids
    os.killpg(proc.pid, signal.SIGINT)  # the terminal sends Ctrl-C to the whole group
    began = time.monotonic()
    _out, err = proc.communicate(timeout=30)
    took = time.monotonic() - began
    assert proc.returncode == 130, err
    assert took < 2.0, f"Ctrl-C took {took:.2f} s"
    assert gone(pids), "a worker outlived Ctrl-C"
    assert "`framefarm resume ctrlc`" in err
    report = status("ctrlc", workdir)
    assert report["status"] == "CANCELLED"
    records = jobs(report)
    assert not [j for j in records if j["status"] == "RUNNING"]
    assert [j for j in records if j["status"] == "CANCELLED"]
    finished = {j["job"] for j in records if j["status"] == "SUCCEEDED" and j["kind"] == "render"}

    resumed = run_cli("resume", "ctrlc", cwd=workdir, env=farm())
    assert resumed.returncode == 0, resumed.stderr
    assert f"{20 - len(finished)} of 20 chunks to render" in resumed.stderr
    assert_video(workdir / "ctrlc.mp4", 200)
    after = jobs(status("ctrlc", workdir))
    # A chunk finished before Ctrl-C was not rendered again.
    for name in finished:
        assert [j["status"] for j in after if j["job"] == name] == ["SUCCEEDED"]
    assert status("ctrlc", workdir)["status"] == "SUCCEEDED"


def test_sigkill_of_the_command_then_resume(workdir: Path,
                                            farm: Callable[..., dict[str, str]]) -> None:
    proc = start(*render_args("killall", 120), cwd=workdir, env=farm(SLOW=0.06))
    wait_until(lambda: frames_done(workdir, "killall") >= 30)
    pids = [p.pid for p in workers_of(proc)]
    proc.send_signal(signal.SIGKILL)  # the driver only: its workers must not outlive it
    proc.communicate(timeout=30)
    wait_until(lambda: gone(pids), timeout=10)
    before = jobs(status("killall", workdir))
    # The attempts that were running are shown lost at once: their processes are gone.
    assert not [j for j in before if j["status"] == "RUNNING"]
    assert [j for j in before if "lost" in str(j["error"])]
    finished = {j["job"] for j in before if j["status"] == "SUCCEEDED" and j["kind"] == "render"}
    assert 0 < len(finished) < 12

    # A render of the same run id is refused, and names resume.
    again = run_cli(*render_args("killall", 120), cwd=workdir, env=farm())
    assert again.returncode == 2
    assert "framefarm resume killall" in again.stderr and "Traceback" not in again.stderr

    resumed = run_cli("resume", "killall", cwd=workdir, env=farm())
    assert resumed.returncode == 0, resumed.stderr
    assert f"{12 - len(finished)} of 12 chunks to render" in resumed.stderr
    assert_video(workdir / "killall.mp4", 120)
    after = jobs(status("killall", workdir))
    assert not [j for j in after if j["status"] == "RUNNING"]
    renders = [j for j in after if j["kind"] == "render"]
    assert sum(j["status"] == "SUCCEEDED" for j in renders) == 12
    for name in finished:
        assert [j["status"] for j in after if j["job"] == name] == ["SUCCEEDED"]


def test_cancel_from_another_shell(workdir: Path, farm: Callable[..., dict[str, str]]) -> None:
    proc = start(*render_args("cancel", 200), cwd=workdir, env=farm(SLOW=0.03))
    wait_until(lambda: frames_done(workdir, "cancel") >= 20)
    pids = [p.pid for p in workers_of(proc)]
    done = run_cli("cancel", "cancel", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert f"stopped its driver, pid {proc.pid}" in done.stdout
    _out, _err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert gone(pids)
    report = status("cancel", workdir)
    assert report["status"] == "CANCELLED"
    assert not [j for j in jobs(report) if j["status"] == "RUNNING"]
    runs = json.loads(run_cli("runs", "--json", cwd=workdir).stdout)
    assert [r["status"] for r in runs if r["run_id"] == "cancel"] == ["CANCELLED"]


def test_two_renders_of_one_run_at_once(workdir: Path, farm: Callable[..., dict[str, str]],
                                        write_sketch: Callable[..., Path]) -> None:
    first = start(*render_args("twice", 100), cwd=workdir, env=farm(SLOW=0.02))
    wait_until(lambda: frames_done(workdir, "twice") >= 5)
    second = run_cli(*render_args("twice", 100), cwd=workdir, env=farm())
    assert second.returncode == 2
    assert f"pid {first.pid}" in second.stderr and "being rendered by" in second.stderr
    resume = run_cli("resume", "twice", cwd=workdir, env=farm())
    assert resume.returncode == 2 and f"pid {first.pid}" in resume.stderr
    _out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert_video(workdir / "twice.mp4", 100)


def _encode(run_id: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    data = cwd / "framefarm-data"
    return run_cli("job", cwd=cwd, env={"JOB_TYPE": "encode", "FRAMEFARM_RUN_ID": run_id,
                                        "FRAMEFARM_STORAGE": data.as_uri(),
                                        "FRAMEFARM_JOBLOG": f"sqlite:///{data}/joblog.sqlite3"})


def test_corrupted_and_swapped_segments_are_refused(workdir: Path,
                                                    farm: Callable[..., dict[str, str]]) -> None:
    done = run_cli(*render_args("bytes"), cwd=workdir, env=farm())
    assert done.returncode == 0, done.stderr
    segments = workdir / "framefarm-data" / "runs" / "bytes" / "segments"
    # 64 random bytes into the middle of segment 2, and segment 1 copied over segment 4.
    two = segments / "00002.mp4"
    data = bytearray(two.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = np.random.default_rng(1).integers(0, 256, 64, np.uint8).tobytes()
    two.write_bytes(bytes(data))
    (segments / "00004.mp4").write_bytes((segments / "00001.mp4").read_bytes())

    encode = _encode("bytes", workdir)
    assert encode.returncode == 2
    assert "chunk 2 (frames 20-29)" in encode.stderr
    assert "does not match what its render job wrote" in encode.stderr
    assert "framefarm resume bytes" in encode.stderr

    resumed = run_cli("resume", "bytes", cwd=workdir, env=farm())
    assert resumed.returncode == 0, resumed.stderr
    assert "2 of 6 chunks to render" in resumed.stderr
    assert_video(workdir / "bytes.mp4", 60)
    attempts = {j["job"]: j["attempt"] for j in jobs(status("bytes", workdir))}
    assert attempts["render:2"] == 2 and attempts["render:4"] == 2 and attempts["render:3"] == 1


def test_a_hand_edited_plan_is_one_line(workdir: Path, farm: Callable[..., dict[str, str]]) -> None:
    done = run_cli(*render_args("edited", 20), cwd=workdir, env=farm())
    assert done.returncode == 0, done.stderr
    plan = workdir / "framefarm-data" / "runs" / "edited" / "plan.json"
    plan.write_text(plan.read_text()[:40])
    resumed = run_cli("resume", "edited", cwd=workdir)
    assert resumed.returncode == 2
    lines = resumed.stderr.strip().splitlines()
    assert len(lines) == 1 and str(plan) in lines[0] and "corrupt" in lines[0], resumed.stderr
    encode = _encode("edited", workdir)  # a container: its FAILED line, then the reason
    assert encode.returncode == 2
    assert f"the plan {plan.as_uri()} is corrupt" in encode.stderr
    assert "Traceback" not in encode.stderr


def test_runs_lists_a_run_that_failed_in_plan(workdir: Path, write_sketch: Callable[..., Path]) -> None:
    write_sketch("""
        raise RuntimeError("broken from the start")
    """)
    done = run_cli(*render_args("noplan", 10), cwd=workdir)
    assert done.returncode == 2
    runs = json.loads(run_cli("runs", "--json", cwd=workdir).stdout)
    assert [(r["run_id"], r["status"]) for r in runs] == [("noplan", "FAILED")]
    resumed = run_cli("resume", "noplan", cwd=workdir)
    assert resumed.returncode == 2 and "render it again" in resumed.stderr


def test_a_locked_job_log_fails_no_chunk(workdir: Path, farm: Callable[..., dict[str, str]]) -> None:
    """Another process holds the job log's write lock for longer than SQLite's busy timeout
    while chunks render: progress and heartbeats wait or are dropped, the run still finishes."""
    from framefarm.joblog.sqlite import BUSY_TIMEOUT_SECONDS

    # 400 frames of 0.1 s on 2 workers: about 20 s of rendering, and the lock held for 35 s of it.
    proc = start(*render_args("locked", 400), cwd=workdir, env=farm(SLOW=0.1))
    wait_until(lambda: frames_done(workdir, "locked") >= 10)
    hold = BUSY_TIMEOUT_SECONDS + 5
    holder = subprocess.Popen(
        ["python3", "-c", "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], "
         "isolation_level=None); c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); "
         "time.sleep(float(sys.argv[2])); c.execute('ROLLBACK')",
         str(workdir / "framefarm-data" / "joblog.sqlite3"), str(hold)],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    assert proc.poll() is None, "the run ended before the job log was locked"
    assert holder.wait(timeout=hold + 30) == 0
    assert proc.poll() is None, "the run ended while the job log was locked"
    _out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert_video(workdir / "locked.mp4", 400)
    report = status("locked", workdir)
    assert report["status"] == "SUCCEEDED"
    assert not [j for j in jobs(report) if j["status"] == "FAILED"]


def test_the_frame_timeout_from_the_environment(workdir: Path,
                                                farm: Callable[..., dict[str, str]]) -> None:
    done = run_cli(*render_args("envtimeout", 20), cwd=workdir,
                   env=farm(HANG_AT=3, FRAMEFARM_FRAME_TIMEOUT=1.5))
    assert done.returncode == 0, done.stderr
    assert_video(workdir / "envtimeout.mp4", 20)
    first = next(j for j in jobs(status("envtimeout", workdir)) if j["job"] == "render:0")
    assert "frame 3 took longer than the frame timeout of 1.5 s" in str(first["error"])


def test_resume_finds_the_runs_own_storage(workdir: Path, write_sketch: Callable[..., Path],
                                           tmp_path: Path) -> None:
    """A run rendered with --storage and --joblog elsewhere is resumed with --joblog alone."""
    write_sketch("""
        import os
        import numpy as np
        def render(ctx):
            if ctx.frame == 15 and not os.path.exists("fixed"):
                raise ValueError("not yet")
            return np.full((ctx.height, ctx.width, 3), ctx.frame * 8, np.uint8)
    """)
    store, log = (tmp_path / "elsewhere").as_uri(), f"sqlite:///{tmp_path}/elsewhere.db"
    done = run_cli(*render_args("away", 20), "--storage", store, "--joblog", log, cwd=workdir)
    assert done.returncode == 2 and "frame 15" in done.stderr
    (workdir / "fixed").touch()
    resumed = run_cli("resume", "away", "--joblog", log, cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    assert "1 of 2 chunks to render" in resumed.stderr
    assert not (workdir / "framefarm-data").exists()
    with av.open(str(workdir / "away.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 20


def test_a_heartbeat_while_one_frame_takes_long(workdir: Path, write_sketch: Callable[..., Path]) -> None:
    """A frame of 12 s: frames done stay 0, yet the attempt's heartbeat moves on every 5 s."""
    write_sketch("""
        import time
        import numpy as np
        def render(ctx):
            if ctx.frame == 0:
                time.sleep(12)
            return np.zeros((ctx.height, ctx.width, 3), np.uint8)
    """)
    proc = start(*render_args("beat", 2, 2), cwd=workdir, env={})
    seen: set[str] = set()

    def beats() -> bool:
        for r in records(workdir, "beat"):
            if r.job == "render:0" and r.status == "RUNNING" and r.frames == 0 and r.heartbeat_at:
                seen.add(r.heartbeat_at)
        return len(seen) >= 2

    wait_until(beats, timeout=30)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def test_ctrl_c_while_planning(workdir: Path, write_sketch: Callable[..., Path]) -> None:
    """Stopped before its plan: nothing to resume, and the same run id renders again."""
    write_sketch(SKETCH.replace("SLOW = float", "import time; time.sleep(float("
                                "os.environ.get('LOAD', '0')))\n    SLOW = float"), "sketch.py")
    proc = start(*render_args("early", 20), cwd=workdir, env={"LOAD": "30", "MARKERS": str(workdir)})
    wait_until(lambda: any(r.job == "plan" for r in records(workdir, "early")))
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 130
    assert "CANCELLED before it was planned" in err
    assert [r.status for r in records(workdir, "early")] == ["CANCELLED"]
    again = run_cli(*render_args("early", 20), cwd=workdir, env={"MARKERS": str(workdir)})
    assert again.returncode == 0, again.stderr
    assert_video(workdir / "early.mp4", 20)


def test_a_worker_that_dies_between_chunks(workdir: Path, farm: Callable[..., dict[str, str]]) -> None:
    """The driver is stopped (SIGSTOP) while its workers finish their chunks and wait for more;
    one idle worker is killed; the driver goes on: its next chunk goes to a fresh worker."""
    proc = start(*render_args("idle", 120), cwd=workdir, env=farm(SLOW=0.02))
    wait_until(lambda: frames_done(workdir, "idle") >= 20)
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: not [r for r in records(workdir, "idle") if r.status == "RUNNING"],
                   timeout=20)
        victim = workers_of(proc)[0]
        victim.send_signal(signal.SIGKILL)
        wait_until(lambda: not psutil.pid_exists(victim.pid)
                   or victim.status() == psutil.STATUS_ZOMBIE, timeout=10)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert_video(workdir / "idle.mp4", 120)
    report = status("idle", workdir)
    assert report["status"] == "SUCCEEDED"
    # It died between chunks: no attempt of any chunk was lost to it.
    assert not [j for j in jobs(report) if j["status"] != "SUCCEEDED"]


FORKSERVER_DRIVER = """
import sys, threading, time
import framefarm

if __name__ == "__main__":  # workers from a forkserver import this module again
    threading.Thread(target=time.sleep, args=(600,), daemon=True).start()  # fork is unsafe now
    try:
        framefarm.render("sketch.py", sys.argv[1], frames=int(sys.argv[2]), per_job=10,
                         size=(64, 48), run_id=sys.argv[3], workers=2)
    except KeyboardInterrupt as stopped:
        print(stopped, file=sys.stderr)
        sys.exit(130)
"""


def test_the_python_api_from_a_threaded_program(workdir: Path, farm: Callable[..., dict[str, str]]) -> None:
    """A driver with threads starts its workers from a forkserver: a worker killed mid-chunk
    still costs only its chunk, and `framefarm cancel` stops an API driver, which records its
    own jobs CANCELLED."""
    (workdir / "driver.py").write_text(FORKSERVER_DRIVER)
    env = {**os.environ, **farm(SLOW=0.08)}
    proc = subprocess.Popen(["python3", "driver.py", "api.mp4", "80", "api"], cwd=workdir, env=env,
                            text=True, stderr=subprocess.PIPE, start_new_session=True)
    victim = wait_for_value(lambda: busy_worker(workdir, "api", proc))
    victim.send_signal(signal.SIGKILL)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert_video(workdir / "api.mp4", 80)
    lost = [r for r in records(workdir, "api") if r.status == "FAILED"]
    assert len(lost) == 1 and f"pid {victim.pid}" in lost[0].error

    proc = subprocess.Popen(["python3", "driver.py", "api2.mp4", "400", "api2"], cwd=workdir,
                            env=env, text=True, stderr=subprocess.PIPE, start_new_session=True)
    wait_until(lambda: frames_done(workdir, "api2") >= 10)
    done = run_cli("cancel", "api2", cwd=workdir)
    assert done.returncode == 0, done.stderr
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "framefarm resume api2" in err
    final = records(workdir, "api2")
    assert not [r for r in final if r.status == "RUNNING"]
    assert [r for r in final if r.status == "CANCELLED"]
    assert status("api2", workdir)["status"] == "CANCELLED"


def test_render_again_of_a_finished_run(workdir: Path, farm: Callable[..., dict[str, str]]) -> None:
    """The same command again prints the video's path; other settings under the id are refused."""
    first = run_cli(*render_args("again", 20), cwd=workdir, env=farm())
    assert first.returncode == 0, first.stderr
    same = run_cli(*render_args("again", 20), cwd=workdir, env=farm())
    assert same.returncode == 0, same.stderr
    video = workdir / "again.mp4"
    assert same.stdout.strip() == f"run again: already rendered with these settings -> {video}"
    assert [r.attempt for r in records(workdir, "again") if r.job == "render:0"] == [1]
    other = run_cli(*render_args("again", 30), cwd=workdir, env=farm())
    assert other.returncode == 2
    assert "run again already exists (SUCCEEDED)" in other.stderr and "another --run-id" in other.stderr
