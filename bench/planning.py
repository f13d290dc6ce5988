"""Planning 1,000,000 frames at 1 frame per job (1,000,000 chunks), through the job contract.

1. The plan job as AWS Batch starts it: `JOB_TYPE=plan framefarm job` in a subprocess, with
   file storage and an SQLite job log in a temporary folder. Its wall time (start to exit,
   interpreter and imports included) and the plan step's own time, from its job-log record
   (started_at to stopped_at, which the job writes after its imports and once plan.json is
   stored). The import floor beside it: `python -c "import framefarm.job"`.
2. A render job's lookup, each in a fresh subprocess with framefarm already imported and the
   storage opened: `read_plan_and_hash(run_id, storage)` then `plan.chunk(999_999)`. Timed in
   one process (with the growth of its peak RSS: /proc/self/clear_refs resets the peak first),
   its Python allocations' peak measured with tracemalloc in another (tracemalloc slows what
   it traces, so never in the timed one).

Run as a script (`python bench/planning.py lookup time|memory STORAGE RUN_ID INDEX`) it is
that lookup subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import EXAMPLES, clean_env, framefarm_exe, measure

FRAMES = 1_000_000
RUN_ID = "bench-plan"
STEP_BUDGET = 0.3
"""Seconds the plan step may take at FRAMES frames and as many chunks."""
LOOKUP_BUDGET, LOOKUP_MEMORY_BUDGET = 0.010, 5.0
"""A render job finds its chunk in under 10 ms and under 5 MB."""


@dataclass
class Planning:
    """What the planning section measured."""

    job_wall: float
    """The plan job's subprocess, start to exit."""
    step: float
    """The plan step, from its job-log record."""
    import_floor: float
    plan_bytes: int
    lookup: float
    lookup_wall: float
    """The timed lookup's subprocess, start to exit."""
    lookup_rss_mb: float
    lookup_traced_mb: float


def _seconds_between(started: str, stopped: str) -> float:
    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    return (parse(stopped) - parse(started)).total_seconds()


def measure_planning(tmp: Path) -> Planning:
    """The plan job, the import floor and a render job's lookup (see the module's docstring)."""
    tmp.mkdir(parents=True)
    storage, joblog = f"file://{tmp / 'farm'}", f"sqlite:///{tmp / 'joblog.db'}"
    env = clean_env(JOB_TYPE="plan", FRAMEFARM_SKETCH=str(EXAMPLES / "plasma.py"),
                    TOTAL_FRAMES=str(FRAMES), FRAMES_PER_RENDER_JOB="1", FRAMEFARM_RUN_ID=RUN_ID,
                    FRAMEFARM_STORAGE=storage, FRAMEFARM_JOBLOG=joblog,
                    FRAMEFARM_OUTPUT=str(tmp / "out.mp4"))
    floor = measure([sys.executable, "-c", "import framefarm.job"], cwd=tmp, contender="imports")
    job = measure([framefarm_exe(), "job"], cwd=tmp, contender="plan job", env=env)
    status = subprocess.run([framefarm_exe(), "status", RUN_ID, "--json", "--joblog", joblog],
                            capture_output=True, text=True, check=True, cwd=tmp,
                            env=clean_env(FRAMEFARM_STORAGE=storage, FRAMEFARM_JOBLOG=joblog))
    record = next(j for j in json.loads(status.stdout)["jobs"] if j["job"] == "plan")
    if record["status"] != "SUCCEEDED":
        raise SystemExit(f"the plan job ended {record['status']}: {record.get('error')}")
    plan_json = tmp / "farm" / "runs" / RUN_ID / "plan.json"
    lookups = {}
    for mode in ("time", "memory"):
        m = measure([sys.executable, str(Path(__file__)), "lookup", mode, storage, RUN_ID,
                     str(FRAMES - 1)], cwd=tmp, contender=f"lookup ({mode})", env=clean_env())
        lookups[mode] = (m, json.loads(m.note))
    timed, traced = lookups["time"][1], lookups["memory"][1]
    return Planning(job_wall=job.wall, step=_seconds_between(record["started_at"],
                                                              record["stopped_at"]),
                    import_floor=floor.wall, plan_bytes=plan_json.stat().st_size,
                    lookup=timed["seconds"], lookup_wall=lookups["time"][0].wall,
                    lookup_rss_mb=timed["rss_mb"], lookup_traced_mb=traced["traced_mb"])


def planning_markdown(p: Planning | None) -> list[str]:
    if p is None:
        return []
    return [f"## planning {FRAMES:,} frames, 1 frame per job ({FRAMES:,} chunks)", "",
            "| what | measured |", "| --- | ---: |",
            f"| plan step (JOB_TYPE=plan framefarm job), from its job-log record | "
            f"{p.step * 1000:.0f} ms |",
            f"| plan job's process, start to exit | {p.job_wall * 1000:.0f} ms |",
            f"| for comparison, its imports alone (python -c \"import framefarm.job\") | "
            f"{p.import_floor * 1000:.0f} ms |",
            f"| plan.json | {p.plan_bytes:,} bytes |",
            f"| render job's lookup: read_plan_and_hash + plan.chunk({FRAMES - 1:_}) | "
            f"{p.lookup * 1000:.2f} ms |",
            f"| its peak Python allocations (tracemalloc) | {p.lookup_traced_mb:.2f} MB |",
            f"| its peak RSS growth | {p.lookup_rss_mb:.2f} MB |", "",
            "The step's time is the job's own record (started after its imports, stopped once "
            "plan.json is stored and the job log updated); the lookup runs in a fresh process "
            "with framefarm imported and the storage opened, timed without tracemalloc.", ""]


def planning_targets(p: Planning | None) -> list[tuple[str, str, bool]]:
    if p is None:
        return []
    memory = max(p.lookup_traced_mb, p.lookup_rss_mb)
    return [(f"plan step ≤ {STEP_BUDGET} s at 1,000,000 frames and chunks",
             f"{p.step * 1000:.0f} ms (job process {p.job_wall * 1000:.0f} ms)",
             p.step <= STEP_BUDGET),
            (f"a render job finds its chunk in < {LOOKUP_BUDGET * 1000:.0f} ms there",
             f"{p.lookup * 1000:.2f} ms", p.lookup < LOOKUP_BUDGET),
            (f"a render job finds its chunk in < {LOOKUP_MEMORY_BUDGET:.0f} MB there",
             f"{p.lookup_traced_mb:.2f} MB traced, {p.lookup_rss_mb:.2f} MB RSS",
             memory < LOOKUP_MEMORY_BUDGET)]


# -- the lookup subprocess ----------------------------------------------------------------------


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _lookup(mode: str, storage_url: str, run_id: str, index: int) -> dict[str, float]:
    import time
    import tracemalloc

    from framefarm.steps.plan import read_plan_and_hash
    from framefarm.storage import open_storage

    storage = open_storage(storage_url)
    if mode == "memory":
        tracemalloc.start()
        plan, _ = read_plan_and_hash(run_id, storage)
        chunk = plan.chunk(index)
        traced = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        found = {"traced_mb": traced}
    else:
        try:  # reset the peak RSS to the current RSS, so the peak after is the lookup's
            Path("/proc/self/clear_refs").write_text("5")
            before = _status_mb("VmRSS")
        except OSError:
            before = _status_mb("VmHWM")
        began = time.perf_counter()
        plan, _ = read_plan_and_hash(run_id, storage)
        chunk = plan.chunk(index)
        seconds = time.perf_counter() - began
        found = {"seconds": seconds, "rss_mb": max(0.0, _status_mb("VmHWM") - before)}
    if (chunk.start, chunk.stop) != (index * plan.frames_per_job,
                                     min((index + 1) * plan.frames_per_job, plan.total_frames)):
        raise SystemExit(f"chunk {index} is frames [{chunk.start}, {chunk.stop})")
    return found


if __name__ == "__main__":
    if len(sys.argv) != 6 or sys.argv[1] != "lookup":
        raise SystemExit(__doc__)
    print(json.dumps(_lookup(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))))
