"""What the job log says about a run: its overall status and the JSON `framefarm status` prints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from framefarm.joblog import JobLog
from framefarm.model import JobRecord, RunRecord


def run_status(latest: Sequence[JobRecord], *, chunks: int | None = None) -> str:
    """A run's status from the last attempt of each of its jobs.

    FAILED when any job's last attempt failed, SUCCEEDED when the encode job succeeded, RUNNING
    while any job runs or has finished, else the least advanced status of its jobs.
    """
    if not latest:
        return "PENDING"
    statuses = {r.status for r in latest}
    if "FAILED" in statuses:
        return "FAILED"
    if any(r.kind == "encode" and r.status == "SUCCEEDED" for r in latest):
        return "SUCCEEDED"
    if statuses & {"RUNNING", "SUCCEEDED", "STARTING"}:
        return "RUNNING"
    for status in ("SUBMITTED", "PENDING", "RUNNABLE"):
        if status in statuses:
            return status
    return "RUNNING"


def frames_done(latest: Sequence[JobRecord]) -> int:
    """Frames rendered so far: the frame counts of each chunk's last attempt."""
    return sum(r.frames for r in latest if r.kind == "render")


def status_report(run: RunRecord | None, records: Sequence[JobRecord], run_id: str) -> dict[str, Any]:
    """The run as `framefarm status --json` prints it."""
    latest: dict[str, JobRecord] = {}
    for record in records:
        latest[record.job] = record
    plan = dict(run.plan) if run else {}
    total = plan.get("total_frames")
    return {
        "run_id": run_id,
        "status": run_status(list(latest.values())),
        "created_at": run.created_at if run else "",
        "sketch": plan.get("sketch", ""),
        "total_frames": total,
        "frames_per_job": plan.get("frames_per_job"),
        "chunks": plan.get("size"),
        "frames_done": frames_done(list(latest.values())),
        "output": run.output if run else "",
        "jobs": [r.to_dict() for r in records],
    }


def load_report(joblog: JobLog, run_id: str) -> dict[str, Any] | None:
    """The status report of `run_id`, or None when the job log has never heard of it."""
    run = joblog.get_run(run_id)
    records = joblog.jobs(run_id)
    if run is None and not records:
        return None
    return status_report(run, records, run_id)
