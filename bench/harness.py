"""What every section of the benchmark shares: the workload, running a contender in a subprocess
and measuring it from outside, and checking the video it made.

Only the standard library is imported at the top: contender subprocesses import this module too,
and must not pay for what the parent needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

    from framefarm.sketch import FrameSource

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
BENCH = ROOT / "bench"
CRF, PRESET = 18, "fast"
FRAMEFARM = "framefarm"
"""The framefarm contender as a user runs it: `framefarm render`, tracing as default."""
# The caller's tracing and framefarm settings must not leak into a framefarm contender.
FOREIGN_ENV = ("OTEL_", "FRAMEFARM_", "TRACEPARENT", "_X_AMZN_TRACE_ID", "JOB_TYPE", "AWS_BATCH_")


@dataclass(frozen=True)
class Workload:
    name: str
    sketch: str
    frames: int
    width: int = 1280
    height: int = 720
    fps: int = 30
    contenders: tuple[str, ...] = ("naive", "pool", "framefarm", "limit")
    per_job: int = 0
    """framefarm's --per-job (0: auto)."""
    workers: int = 0
    """framefarm's --workers (0: its default, one per core)."""
    size_budget: float = 0.0
    """framefarm's --size-budget in percent (0: its default, none)."""

    def to_json(self) -> str:
        """The workload as a contender subprocess gets it (its contender list left out)."""
        return json.dumps({**asdict(self), "contenders": []})

    @classmethod
    def from_json(cls, text: str) -> Workload:
        data = json.loads(text)
        return cls(**{**data, "contenders": tuple(data.get("contenders", ()))})


@dataclass
class Measure:
    """One contender on one workload."""

    contender: str
    wall: float
    cpu: float
    peak_mb: float
    worker_peak_mb: float = 0.0
    frames: int = 0
    note: str = ""
    spans: int = 0
    """framefarm: spans in the run's stored trace (runs/RUN/trace.jsonl)."""
    exported: int = 0
    """framefarm over OTLP: spans the receiver got in the run's trace."""
    bytes: int = 0
    """The video's size on disk."""
    video: str = ""
    """Where the video is (until the benchmark's temporary folder goes)."""


# -- measuring a subprocess ---------------------------------------------------------------------


def peak_rss_mb(process: psutil.Process) -> float:
    """A process's peak RSS so far in MB: the kernel's high-water mark (VmHWM), so a peak between
    two samples is not missed; the current RSS where /proc is not there."""
    try:
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return float(process.memory_info().rss) / 2**20


def measure(command: Sequence[str], *, cwd: Path, contender: str,
            env: dict[str, str] | None = None) -> Measure:
    """Run `command`; wall time, CPU time of its whole tree, and peak RSS (largest process, and
    largest process other than the root: a worker)."""
    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    process = subprocess.Popen(list(command), cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    peaks: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        try:
            root = psutil.Process(process.pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for p in tree:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    peaks[p.pid] = max(peaks.get(p.pid, 0.0), peak_rss_mb(p))
            done.wait(0.05)  # light: sampling must not slow what it measures

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - began
    done.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0:
        raise SystemExit(f"{contender} failed ({process.returncode}):\n{stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    workers = [mb for pid, mb in peaks.items() if pid != process.pid]
    note = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    return Measure(contender, wall, cpu, max(peaks.values(), default=0.0),
                   max(workers, default=0.0), note=note)


def count_frames(path: Path) -> int:
    """Frames in a video, counted by decoding every one of them."""
    from framefarm.video import probe

    frames: int = probe(path).frames
    return frames


# -- contenders ---------------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the caller's tracing and framefarm settings, plus
    `extra`: what a framefarm contender starts with."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV)}
    return {**env, **extra}


def framefarm_exe() -> str:
    """The `framefarm` command of this interpreter's environment."""
    return shutil.which("framefarm", path=str(Path(sys.executable).parent)) or "framefarm"


def framefarm_command(work: Workload, out: Path) -> list[str]:
    """`framefarm render` as a user runs it for `work`."""
    command = [framefarm_exe(), "render", str(EXAMPLES / work.sketch), "-o", str(out), "--frames",
               str(work.frames), "--size", f"{work.width}x{work.height}"]
    if work.per_job:
        command += ["--per-job", str(work.per_job)]
    if work.workers:
        command += ["--workers", str(work.workers)]
    if work.size_budget:
        command += ["--size-budget", f"{work.size_budget:g}"]
    return command


def contender_command(name: str, work: Workload, out: Path) -> list[str]:
    """Any other contender: `bench/contender.py NAME WORKLOAD OUT` in a fresh interpreter."""
    return [sys.executable, str(BENCH / "contender.py"), name, work.to_json(), str(out)]


def run_contender(name: str, work: Workload, tmp: Path, *, tag: str = "",
                  env: dict[str, str] | None = None) -> Measure:
    """Run one contender on `work` in a folder of its own under `tmp`, measure it, and check its
    video has every frame (or stop the benchmark). A name starting with "framefarm" is
    `framefarm render` (in `env`, else `clean_env()`); any other, `bench/contender.py`."""
    out = tmp / f"{work.name}-{name}{tag}" / "out.mp4"
    out.parent.mkdir(parents=True)
    if name.startswith(FRAMEFARM):
        command, env = framefarm_command(work, out), clean_env() if env is None else env
    else:
        command = contender_command(name, work, out)
    result = measure(command, cwd=out.parent, contender=name, env=env)
    result.frames = count_frames(out)
    if result.frames != work.frames:
        raise SystemExit(f"{name} made {result.frames} frames of {work.frames}")
    result.bytes = out.stat().st_size
    result.video = str(out)
    return result


def frame_source(work: Workload) -> FrameSource:
    """The sketch's frames as every contender draws them (framefarm's own FrameSource), so all
    draw the same pixels with the same per-frame RNG."""
    from framefarm.sketch import FrameSource, load_sketch

    return FrameSource(load_sketch(str(EXAMPLES / work.sketch)), width=work.width,
                       height=work.height, fps=str(work.fps), total_frames=work.frames)


def load_average() -> float:
    """The 1-minute load average (anything else running skews the numbers)."""
    return os.getloadavg()[0]
