"""Plays AWS Batch for tests: reads the jobs submitted to a (moto) job queue back through the
Batch API and runs each one's container command with exactly the environment Batch would inject,
in dependency order.

moto with `use_docker: false` marks every job SUCCEEDED at once and ignores `dependsOn`; the
player therefore keeps its own record of what it ran and runs a job only when every job it
depends on has run and exited 0 — as Batch does. An array job runs as its children, each with
its own AWS_BATCH_JOB_ARRAY_INDEX and a job id of `parent:index`.

What Batch injects, and the player too: the image's ENV (the Dockerfile stage the job
definition's image tag names), the job definition's environment, the submission's container
overrides (which win), AWS_BATCH_JOB_ID, AWS_BATCH_JOB_ATTEMPT, AWS_BATCH_JQ_NAME and, for array
children, AWS_BATCH_JOB_ARRAY_INDEX. `machine` stands for what the host gives every container
(here: where AWS is, and credentials in place of the job role's).
"""

from __future__ import annotations

import fnmatch
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.containers import Stage, image_stages, run_as_image

_STATUSES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")


@dataclass
class Played:
    """One container the player ran."""

    job_id: str
    job_name: str
    stage: str
    env: dict[str, str]
    command: list[str]
    done: subprocess.CompletedProcess[str]

    @property
    def ok(self) -> bool:
        return self.done.returncode == 0


@dataclass
class BatchPlayer:
    """Runs what was submitted to `queue`, as AWS Batch would."""

    batch: Any
    queue: str
    workdir: Path
    machine: Mapping[str, str]
    stages: dict[str, Stage] = field(default_factory=image_stages)
    played: list[Played] = field(default_factory=list)
    timeout: float = 240

    def submitted(self) -> list[dict[str, Any]]:
        """Every top-level job in the queue (not array children), described, oldest first."""
        ids: list[str] = []
        for status in _STATUSES:
            pages = self.batch.get_paginator("list_jobs").paginate(jobQueue=self.queue,
                                                                   jobStatus=status)
            ids += [j["jobId"] for page in pages for j in page["jobSummaryList"]
                    if ":" not in j["jobId"]]
        jobs: list[dict[str, Any]] = []
        for start in range(0, len(ids), 100):
            jobs += self.batch.describe_jobs(jobs=ids[start:start + 100])["jobs"]
        return sorted(jobs, key=lambda j: (j["createdAt"], j["jobId"]))

    def done_ok(self, job_id: str) -> bool:
        """True when the player ran `job_id` (every child, for an array job) and all exited 0."""
        last: dict[str, Played] = {}  # each container's last attempt
        for p in self.played:
            if p.job_id == job_id or p.job_id.startswith(job_id + ":"):
                last[p.job_id] = p
        return bool(last) and all(p.ok for p in last.values())

    def run_until_idle(self, *, stop_on_failure: bool = True) -> list[Played]:
        """Run every job whose dependencies succeeded, again and again, until none is left that
        can run (jobs submitted by a job that ran are picked up on the next pass)."""
        ran: set[str] = {p.job_id.partition(":")[0] for p in self.played}
        while True:
            ready = [j for j in self.submitted() if j["jobId"] not in ran
                     and all(self.done_ok(d["jobId"]) for d in j.get("dependsOn", []))]
            if not ready:
                return self.played
            for job in ready:
                ran.add(job["jobId"])
                for played in self.run_job(job):
                    if not played.ok and stop_on_failure:
                        return self.played

    def run_job(self, job: Mapping[str, Any]) -> list[Played]:
        """Run one submitted job: its container, or each child's for an array job; a failed
        container is run again as the job definition's retry strategy says."""
        size = int((job.get("arrayProperties") or {}).get("size") or 0)
        return [self._run_with_retries(job, index) for index in (range(size) if size else [None])]

    def _run_with_retries(self, job: Mapping[str, Any], index: int | None) -> Played:
        strategy = self._definition(job["jobDefinition"]).get("retryStrategy") or {}
        attempts = int(strategy.get("attempts") or 1)
        while True:
            played = self._run(job, index)
            attempt = int(played.env["AWS_BATCH_JOB_ATTEMPT"])
            if played.ok or attempt >= attempts or not retries(strategy, played.done.returncode):
                return played

    def _definition(self, arn: str) -> dict[str, Any]:
        found = self.batch.describe_job_definitions(jobDefinitions=[arn])["jobDefinitions"]
        assert found, f"job definition {arn} is not registered"
        definition: dict[str, Any] = found[0]
        return definition

    def _run(self, job: Mapping[str, Any], index: int | None) -> Played:
        definition = self._definition(job["jobDefinition"])
        props = definition["containerProperties"]
        stage = self.stage_of(props["image"])
        defined = {e["name"]: str(e["value"]) for e in props.get("environment", [])}
        env = dict(defined)
        # DescribeJobs shows the definition's environment merged with the overrides; an
        # override is an entry whose value differs from the definition's.
        for entry in job["container"].get("environment", []):
            name, value = entry["name"], str(entry["value"])
            if not name.startswith("AWS_BATCH_") and defined.get(name) != value:
                env[name] = value
        job_id = job["jobId"] if index is None else f"{job['jobId']}:{index}"
        attempt = 1 + sum(p.job_id == job_id for p in self.played)
        env.update({"AWS_BATCH_JOB_ID": job_id, "AWS_BATCH_JOB_ATTEMPT": str(attempt),
                    "AWS_BATCH_JQ_NAME": self.queue})
        if index is not None:
            env["AWS_BATCH_JOB_ARRAY_INDEX"] = str(index)
        command = list(job["container"].get("command") or props.get("command") or [])
        done = run_as_image(self.stages[stage], {**self.machine, **env}, self.workdir,
                            command=command, timeout=self.timeout)
        played = Played(job_id=job_id, job_name=job["jobName"], stage=stage, env=env,
                        command=command, done=done)
        self.played.append(played)
        return played

    def stage_of(self, image: str) -> str:
        """The Dockerfile target an image URI names: its tag is the job type (plan-latest …)."""
        tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
        matches = [name for name in ("plan", "render", "encode") if tag.startswith(name)]
        assert len(matches) == 1, f"image {image!r}: its tag should name a Dockerfile target"
        return matches[0]


def env_of(job: Mapping[str, Any]) -> dict[str, str]:
    """A described job's container environment (the job definition's merged with the overrides)."""
    return {e["name"]: str(e["value"]) for e in job["container"]["environment"]}


def retries(strategy: Mapping[str, Any], exit_code: int,
            status_reason: str = "Essential container in task exited", reason: str = "") -> bool:
    """Whether Batch retries an attempt that ended so: the first `evaluateOnExit` rule whose
    patterns all match decides; with no rule matching, Batch retries."""
    for rule in strategy.get("evaluateOnExit") or []:
        checks = [(rule.get("onExitCode"), str(exit_code)),
                  (rule.get("onStatusReason"), status_reason), (rule.get("onReason"), reason)]
        if all(fnmatch.fnmatchcase(value, pattern) for pattern, value in checks if pattern):
            return str(rule["action"]).upper() == "RETRY"
    return True
