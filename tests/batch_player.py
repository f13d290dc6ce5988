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

What DescribeJobs shows is what Batch would show, since the player sets it in moto (which runs
in this process) as its Docker mode would: a job it has seen is PENDING (waiting on a
dependency) or RUNNABLE, RUNNING while its container runs, RUNNABLE again before a retry, then
SUCCEEDED or FAILED with the container's exit code; an array parent FAILED once a child failed
for good; a job whose dependency failed FAILED. TerminateJob is honoured: a terminated job (or a
child of a terminated array) that runs has its container stopped as `docker stop` does (SIGTERM,
then SIGKILL), one that waits never starts; it shows FAILED with the reason given, and is not
retried.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.containers import Stage, image_stages

_STATUSES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")
_EXITED = "Essential container in task exited"
STOP_GRACE_SECONDS = 5.0
"""How long a stopped container has between SIGTERM and SIGKILL (`docker stop` gives 10)."""


@dataclass
class Played:
    """One container the player ran."""

    job_id: str
    job_name: str
    stage: str
    env: dict[str, str]
    command: list[str]
    done: subprocess.CompletedProcess[str]
    terminated: str = ""
    """TerminateJob's reason, when the container was stopped by it."""

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
    held: set[str] = field(default_factory=set)
    """Job types (plan, render, encode) the player does not start for now, as when Batch has
    no capacity for them."""
    _seen: set[str] = field(default_factory=set)
    """Top-level jobs whose status the player keeps in moto."""
    _ended: set[str] = field(default_factory=set)
    """Top-level jobs it ran, or failed without running."""
    _closing: threading.Event = field(default_factory=threading.Event)

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
        while not self._closing.is_set():
            jobs = [j for j in self.submitted() if j["jobId"] not in self._ended]
            for job in jobs:
                self._admit(job)
            ready = [j for j in jobs if not self._fail_if_blocked(j)
                     and all(self.done_ok(d["jobId"]) for d in j.get("dependsOn", []))
                     and env_of(j).get("JOB_TYPE") not in self.held]
            if not ready:
                break
            for job in ready:
                self._ended.add(job["jobId"])
                for played in self.run_job(job):
                    if not played.ok and stop_on_failure:
                        return self.played
        return self.played

    @contextlib.contextmanager
    def in_background(self, *, pause: float = 0.1) -> Iterator[BatchPlayer]:
        """Play Batch from a thread while the block runs (a `--wait` or `resume` that follows
        the run, a `cancel` of a running job); what the thread raised is raised at the end."""
        errors: list[BaseException] = []

        def play() -> None:
            try:
                while not self._closing.is_set():
                    self.run_until_idle(stop_on_failure=False)
                    self._closing.wait(pause)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=play, daemon=True, name="batch-player")
        thread.start()
        try:
            yield self
        finally:
            self._closing.set()
            thread.join(self.timeout)
            self._closing.clear()
        if errors:
            raise errors[0]

    def run_job(self, job: Mapping[str, Any]) -> list[Played]:
        """Run one submitted job: its container, or each child's for an array job; a failed
        container is run again as the job definition's retry strategy says."""
        size = int((job.get("arrayProperties") or {}).get("size") or 0)
        played = [p for index in (range(size) if size else [None])
                  if (p := self._run_with_retries(job, index)) is not None]
        if size:
            failed = len(played) < size or not all(p.ok for p in played)
            self._set(job["jobId"], "FAILED" if failed else "SUCCEEDED",
                      reason=self._terminated(job["jobId"]) or (_EXITED if failed else None))
        return played

    # -- Batch's side of it ---------------------------------------------------------------------

    def _admit(self, job: Mapping[str, Any]) -> None:
        """A job seen for the first time shows what Batch would show of it: PENDING on its
        dependencies, else RUNNABLE (moto marked it SUCCEEDED when it was submitted)."""
        if job["jobId"] in self._seen:
            return
        self._seen.add(job["jobId"])
        waiting = "PENDING" if job.get("dependsOn") else "RUNNABLE"
        size = int((job.get("arrayProperties") or {}).get("size") or 0)
        for index in range(size):
            self._set(f"{job['jobId']}:{index}", waiting)
        self._set(job["jobId"], "PENDING" if size else waiting)

    def _fail_if_blocked(self, job: Mapping[str, Any]) -> bool:
        """Fail a waiting job that was terminated, or whose dependency failed; True if so."""
        reason = self._terminated(job["jobId"])
        failed = [d["jobId"] for d in job.get("dependsOn", [])
                  if self._model(d["jobId"]).status == "FAILED"]
        if reason is None and failed:
            reason = f"Dependent job {failed[0]} failed"
        if reason is None:
            return False
        self._ended.add(job["jobId"])
        size = int((job.get("arrayProperties") or {}).get("size") or 0)
        for index in range(size):
            self._set(f"{job['jobId']}:{index}", "FAILED", reason=reason)
        self._set(job["jobId"], "FAILED", reason=reason)
        return True

    def _terminated(self, job_id: str) -> str | None:
        """TerminateJob's reason, when it was called on the job or on its array parent."""
        for target in dict.fromkeys((job_id, job_id.partition(":")[0])):
            model = self._model(target)
            if model.stop:
                return str(model.job_stopped_reason or "Terminated")
        return None

    def _model(self, job_id: str) -> Any:
        """moto's own record of a job (moto's server runs in this process)."""
        from moto.batch.models import batch_backends

        for account in list(batch_backends):
            for region in list(batch_backends[account]):
                found = batch_backends[account][region]._jobs.get(job_id)
                if found is not None:
                    return found
        raise KeyError(f"moto has no Batch job {job_id}")

    def _set(self, job_id: str, status: str, *, reason: str | None = None,
             exit_code: int | None = None) -> None:
        model = self._model(job_id)
        final = status in ("SUCCEEDED", "FAILED")
        model.status = status
        model.job_stopped = final
        if status == "RUNNING":
            model.job_started_at = datetime.now()
        if final:
            model.job_stopped_at = datetime.now()
        if reason is not None or not model.stop:
            model.job_stopped_reason = reason
        if exit_code is not None:
            model.exit_code = exit_code

    # -- containers -----------------------------------------------------------------------------

    def _run_with_retries(self, job: Mapping[str, Any], index: int | None) -> Played | None:
        job_id = job["jobId"] if index is None else f"{job['jobId']}:{index}"
        strategy = self._definition(job["jobDefinition"]).get("retryStrategy") or {}
        attempts = int(strategy.get("attempts") or 1)
        while True:
            reason = self._terminated(job_id)
            if reason is not None:  # terminated before it started: it never runs
                self._set(job_id, "FAILED", reason=reason)
                return None
            played = self._run(job, index)
            code = played.done.returncode
            if played.terminated:
                self._set(job_id, "FAILED", reason=played.terminated, exit_code=code)
                return played
            if played.ok:
                self._set(job_id, "SUCCEEDED", exit_code=0)
                return played
            attempt = int(played.env["AWS_BATCH_JOB_ATTEMPT"])
            if attempt >= attempts or not retries(strategy, code):
                self._set(job_id, "FAILED", reason=_EXITED, exit_code=code)
                return played
            self._set(job_id, "RUNNABLE")

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
        self._set(job_id, "RUNNING")
        done, terminated = self._container(self.stages[stage], {**self.machine, **env},
                                           command=command, job_id=job_id)
        played = Played(job_id=job_id, job_name=job["jobName"], stage=stage, env=env,
                        command=command, done=done, terminated=terminated)
        self.played.append(played)
        return played

    def _container(self, stage: Stage, overrides: Mapping[str, str], *, command: list[str],
                   job_id: str) -> tuple[subprocess.CompletedProcess[str], str]:
        """Run the image's entrypoint as tests.containers.run_as_image does, but as a process
        that TerminateJob can stop; how it ended, and the termination's reason if any."""
        env = {k: v for k, v in os.environ.items()
               if k in ("PATH", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH")}
        env.update(stage.env)
        env["HOME"] = str(self.workdir)  # the image's HOME exists; here a writable stand-in
        env.update(overrides)
        exe = shutil.which(stage.entrypoint[0], path=str(Path(sys.executable).parent)) \
            or stage.entrypoint[0]
        argv = [exe, *stage.entrypoint[1:], *command]
        logs = self.workdir / f".logs-{job_id.replace(':', '-')}-{len(self.played)}"
        terminated = ""
        with open(f"{logs}.out", "w+") as out, open(f"{logs}.err", "w+") as err:
            process = subprocess.Popen(argv, env=env, cwd=self.workdir, text=True, stdout=out,
                                       stderr=err)
            deadline = time.monotonic() + self.timeout
            try:
                while process.poll() is None:
                    reason = self._terminated(job_id)
                    if reason is not None or self._closing.is_set():
                        terminated = reason or "the player was stopped"
                        _stop(process)
                        break
                    if time.monotonic() > deadline:
                        raise subprocess.TimeoutExpired(argv, self.timeout)
                    time.sleep(0.05)
            finally:
                if process.poll() is None:
                    process.kill()
                process.wait()
            out.seek(0)
            err.seek(0)
            done = subprocess.CompletedProcess(argv, process.returncode, out.read(), err.read())
        return done, terminated

    def stage_of(self, image: str) -> str:
        """The Dockerfile target an image URI names: its tag is the job type (plan-latest …)."""
        tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
        matches = [name for name in ("plan", "render", "encode") if tag.startswith(name)]
        assert len(matches) == 1, f"image {image!r}: its tag should name a Dockerfile target"
        return matches[0]


def _stop(process: subprocess.Popen[str]) -> None:
    """Stop a container's process as `docker stop` does: SIGTERM, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()


def env_of(job: Mapping[str, Any]) -> dict[str, str]:
    """A described job's container environment (the job definition's merged with the overrides)."""
    return {e["name"]: str(e["value"]) for e in job["container"]["environment"]}


def retries(strategy: Mapping[str, Any], exit_code: int,
            status_reason: str = _EXITED, reason: str = "") -> bool:
    """Whether Batch retries an attempt that ended so: the first `evaluateOnExit` rule whose
    patterns all match decides; with no rule matching, Batch retries."""
    for rule in strategy.get("evaluateOnExit") or []:
        checks = [(rule.get("onExitCode"), str(exit_code)),
                  (rule.get("onStatusReason"), status_reason), (rule.get("onReason"), reason)]
        if all(fnmatch.fnmatchcase(value, pattern) for pattern, value in checks if pattern):
            return str(rule["action"]).upper() == "RETRY"
    return True
