"""What the job log says about a run: its overall status and the JSON `framefarm status` prints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from framefarm.joblog import JobLog
from framefarm.lifecycle import with_lost
from framefarm.model import TERMINAL_STATUSES, JobRecord, RunRecord, status_rank


def run_status(latest: Sequence[JobRecord], *, chunks: int | None = None,
               cancelled: bool = False) -> str:
    """A run's status from the last attempt of each of its jobs.

    SUCCEEDED when the encode job succeeded; CANCELLED when the run was cancelled, or a job was
    and none runs; FAILED when any job's last attempt failed; RUNNING while any job runs or has
    finished, else the least advanced status of its jobs.
    """
    if any(r.kind == "encode" and r.status == "SUCCEEDED" for r in latest):
        return "SUCCEEDED"
    statuses = {r.status for r in latest}
    if cancelled or ("CANCELLED" in statuses and "RUNNING" not in statuses):
        return "CANCELLED"
    if not latest:
        return "PENDING"
    if "FAILED" in statuses:
        return "FAILED"
    if statuses & {"RUNNING", "SUCCEEDED", "STARTING"}:
        return "RUNNING"
    for status in ("SUBMITTED", "PENDING", "RUNNABLE"):
        if status in statuses:
            return status
    return "RUNNING"


def overall_status(run: RunRecord | None, latest: Sequence[JobRecord], *, driven: bool) -> str:
    """The run's status (run_status) from its record and the last attempt of each job: a
    local run whose driver is gone (no lease) with no job running was interrupted: FAILED."""
    status = run_status(latest, cancelled=bool(run and run.cancelled_at))
    if status == "RUNNING" and run is not None and run.runner == "local" and not driven \
            and not any(r.status == "RUNNING" for r in latest):
        return "FAILED"
    return status


def merged_jobs(records: Sequence[JobRecord],
                batch: Mapping[str, Mapping[str, str]]) -> list[JobRecord]:
    """The job log's records with what the runner (AWS Batch) says of the same jobs.

    A job the job log has not heard of yet appears with the runner's status; a job whose last
    attempt the job log still shows running but the runner has failed (a Spot instance taken
    back, a container killed) shows FAILED with the runner's reason.
    """
    merged = list(records)
    latest = {r.job: i for i, r in enumerate(merged)}
    for name, info in batch.items():
        status = info["status"]
        if name not in latest:
            kind, _, index = name.partition(":")
            merged.append(JobRecord(run_id=records[0].run_id if records else "", job=name,
                                    kind=kind, index=int(index) if index else None,  # type: ignore[arg-type]
                                    status=status, error=info.get("reason", "")
                                    if status == "FAILED" else "",
                                    runner_id=info.get("runner_id", "")))
            continue
        mine = merged[latest[name]]
        if status == "FAILED" and mine.status not in TERMINAL_STATUSES:
            merged[latest[name]] = mine.evolve(status="FAILED", error=info.get("reason", ""))
        elif (status != "SUCCEEDED" and mine.status not in TERMINAL_STATUSES
              and status_rank(status) > status_rank(mine.status)):
            # Success is the job's own word (it writes SUCCEEDED before it exits); Batch only
            # moves a job the job log knows forward through its queue states.
            merged[latest[name]] = mine.evolve(status=status)
    order = {"plan": 0, "render": 1, "encode": 2}
    return sorted(merged, key=lambda r: (order[r.kind], r.index if r.index is not None else -1,
                                         r.attempt))


def frames_done(latest: Sequence[JobRecord]) -> int:
    """Frames rendered so far: the frame counts of each chunk's last attempt."""
    return sum(r.frames for r in latest if r.kind == "render")


def status_report(run: RunRecord | None, records: Sequence[JobRecord], run_id: str, *,
                  driven: bool = True) -> dict[str, Any]:
    """The run as `framefarm status --json` prints it; `driven`: a driver holds the run's lease
    (a local run without one whose jobs all ended was interrupted)."""
    records = with_lost(records)
    latest: dict[str, JobRecord] = {}
    for record in records:
        latest[record.job] = record
    status = overall_status(run, list(latest.values()), driven=driven)
    plan = dict(run.plan) if run else {}
    total = plan.get("total_frames")
    return {
        "run_id": run_id,
        "status": status,
        "runner": (run.runner or "local") if run else "",
        "cancelled_at": run.cancelled_at if run else "",
        "created_at": run.created_at if run else "",
        "sketch": plan.get("sketch", ""),
        "total_frames": total,
        "frames_per_job": plan.get("frames_per_job"),
        "chunks": plan.get("size"),
        "sketch_mode": plan.get("sketch_mode", ""),
        "frames_done": frames_done(list(latest.values())),
        "output": run.output if run else "",
        "jobs": [r.to_dict() for r in records],
    }


def load_report(joblog: JobLog, run_id: str) -> dict[str, Any] | None:
    """The status report of `run_id`, or None when the job log has never heard of it.

    The job log's records are merged with what the run's own runner says of its jobs (AWS
    Batch: DescribeJobs).
    """
    run = joblog.get_run(run_id)
    records = joblog.jobs(run_id)
    if run is None and not records:
        return None
    engine: dict[str, str] = {}
    if run is not None and run.runner_ids:
        from framefarm.runners import runner_engine_view, runner_job_statuses

        records = merged_jobs(records, runner_job_statuses(run))
        engine = runner_engine_view(run)
    report = status_report(run, records, run_id, driven=joblog.lease(run_id) is not None)
    if engine:
        report["engine"] = engine
    return report
