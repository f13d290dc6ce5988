"""AWS Batch: a plan job that submits the render array job (one child per chunk, each reading
AWS_BATCH_JOB_ARRAY_INDEX) and an encode job that depends on it — the job contract's variables
travel as `containerOverrides.environment`.

`submit_downstream` runs inside the plan container (called from `framefarm job`), and again on
the user's machine for `framefarm resume`, which submits only the chunks without a verified
segment: their indexes travel in FRAMEFARM_CHUNKS and child i renders the i-th. `BatchRunner`
is `framefarm render --runner batch` (and `resume`, `cancel`) on the user's machine.

The run's record keeps the Batch ids of its latest submission (`runner_ids`): `plan`, `encode`,
`render` with, for a resumed run, `chunks` (the indexes its children render); a resume whose
list is too long for one SubmitJob adds `render.2`/`chunks.2` …; `terminated` says when
`cancel` (or Ctrl-C on a `--wait`) terminated them.
"""

from __future__ import annotations

import contextlib
import math
import re
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from framefarm import config, tracing
from framefarm.errors import UserError
from framefarm.joblog import JobLog, StatusConflict, now_iso, open_joblog
from framefarm.lifecycle import NOT_STARTED, close_open_attempts
from framefarm.model import TERMINAL_STATUSES, JobKind, JobOutcome, JobRecord, RunRecord
from framefarm.runners._base import (
    Progress,
    ProgressCallback,
    ResumeRequest,
    Runner,
    RunRequest,
    RunResult,
)
from framefarm.runners._remote import fetch_output, stage_sketch, take_local_output
from framefarm.steps._keys import output_key

if TYPE_CHECKING:
    from framefarm.job import Planned

MAX_ARRAY_SIZE = 10_000
"""AWS Batch array jobs have 2 to 10,000 children."""
CHUNK_LIST_CHARS = 12_000
"""The longest FRAMEFARM_CHUNKS one render job is given: SubmitJob takes 30 KiB in all, so a
resume with more missing chunks than that lists submits them as several render jobs."""
ACTIVE = frozenset({"SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING"})
"""AWS Batch statuses of a job that has not finished."""

# Variables every downstream job gets from the plan job (or resume), when it has them.
_PASSED_ON = (config.STORAGE, config.JOBLOG, config.JOBLOG_TTL_DAYS, config.JOB_CPUS,
              config.FRAME_TIMEOUT, config.TRACEPARENT, config.XRAY_TRACE_ID)
# What a run's record keeps for resume and cancel, besides the targets.
_KEPT = (config.FRAME_TIMEOUT, config.JOBLOG_TTL_DAYS, config.JOB_CPUS)
_RENDER_KEY = re.compile(r"render(\.\d+)?")


@dataclass(frozen=True, kw_only=True)
class BatchTargets:
    """Where jobs go: the job queue and one job definition per job type."""

    queue: str
    render_definition: str
    encode_definition: str
    plan_definition: str = ""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> BatchTargets | None:
        """The targets named by FRAMEFARM_JOB_QUEUE and the job-definition variables, if set."""
        queue = environ.get(config.JOB_QUEUE, "").strip()
        if not queue:
            return None
        render = environ.get(config.RENDER_JOB_DEFINITION, "").strip()
        encode = environ.get(config.ENCODE_JOB_DEFINITION, "").strip()
        missing = [n for n, v in ((config.RENDER_JOB_DEFINITION, render),
                                  (config.ENCODE_JOB_DEFINITION, encode)) if not v]
        if missing:
            raise UserError(f"{config.JOB_QUEUE} is set but {' and '.join(missing)} is not: "
                            "name the job definitions to submit render and encode jobs with")
        return cls(queue=queue, render_definition=render, encode_definition=encode,
                   plan_definition=environ.get(config.PLAN_JOB_DEFINITION, "").strip())

    def to_environ(self) -> dict[str, str]:
        """The variables `from_environ` reads back (kept in the run's record)."""
        env = {config.JOB_QUEUE: self.queue, config.RENDER_JOB_DEFINITION: self.render_definition,
               config.ENCODE_JOB_DEFINITION: self.encode_definition}
        if self.plan_definition:
            env[config.PLAN_JOB_DEFINITION] = self.plan_definition
        return env


@dataclass(frozen=True, kw_only=True)
class RenderJob:
    """One submitted render job: an array job or, for a single chunk, a plain job."""

    job_id: str
    chunks: tuple[int, ...] | None = None
    """The chunks it renders, child i the i-th (FRAMEFARM_CHUNKS); None: every chunk of the
    plan, child i chunk i."""

    def children(self, plan_size: int) -> dict[str, str]:
        """Job-log name -> Batch job id of each chunk it renders."""
        listed = self.chunks if self.chunks is not None else tuple(range(plan_size))
        if len(listed) == 1:
            return {f"render:{listed[0]}": self.job_id}
        return {f"render:{chunk}": f"{self.job_id}:{i}" for i, chunk in enumerate(listed)}


@dataclass(frozen=True, kw_only=True)
class Submitted:
    """The Batch jobs of one submission: its render jobs (none when every chunk is done) and
    the encode job that depends on them; `settings` are kept in the run's record."""

    renders: tuple[RenderJob, ...]
    encode: str
    settings: Mapping[str, str] = field(default_factory=dict)

    @property
    def render(self) -> str:
        """The (first) render job's id; empty when no chunk was submitted."""
        return self.renders[0].job_id if self.renders else ""

    def runner_ids(self) -> dict[str, str]:
        """The run record's keys for these jobs."""
        ids = {"encode": self.encode}
        for n, job in enumerate(self.renders):
            suffix = f".{n + 1}" if n else ""
            ids[f"render{suffix}"] = job.job_id
            if job.chunks is not None:
                ids[f"chunks{suffix}"] = ",".join(map(str, job.chunks))
        return ids


def render_jobs(runner_ids: Mapping[str, str]) -> list[RenderJob]:
    """The render jobs a run's record names, in submission order."""
    jobs = []
    for key in sorted((k for k in runner_ids if _RENDER_KEY.fullmatch(k)),
                      key=lambda k: int(k.partition(".")[2] or 1)):
        listed = runner_ids.get("chunks" + key[len("render"):])
        chunks = None if listed is None else tuple(int(c) for c in listed.split(",") if c)
        jobs.append(RenderJob(job_id=runner_ids[key], chunks=chunks))
    return jobs


def _submission_key(key: str) -> bool:
    """True for the keys a new submission replaces (all but the plan job's)."""
    return key != "plan"


def job_name(run_id: str, kind: str) -> str:
    """A Batch job name (letters, digits, - and _, at most 128) for a run's job."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"framefarm-{run_id}-{kind}")[:128]


def _overrides(env: Mapping[str, str]) -> dict[str, Any]:
    return {"environment": [{"name": k, "value": v} for k, v in env.items()]}


def batch_client(client: Any = None) -> Any:
    """The given Batch client, or one from the standard AWS configuration (retries with backoff
    and jitter, so SubmitJob's rate limit slows submission down instead of failing it)."""
    if client is not None:
        return client
    from framefarm._aws import client as aws_client

    return aws_client("batch")


def chunk_groups(chunks: Sequence[int], *, limit: int = CHUNK_LIST_CHARS) -> list[tuple[int, ...]]:
    """`chunks` cut into runs whose FRAMEFARM_CHUNKS text stays within `limit` characters."""
    groups: list[tuple[int, ...]] = []
    current: list[int] = []
    length = 0
    for chunk in chunks:
        size = len(str(chunk)) + 1
        if current and length + size - 1 > limit:
            groups.append(tuple(current))
            current, length = [], 0
        current.append(chunk)
        length += size
    if current:
        groups.append(tuple(current))
    return groups


def submit_downstream(*, run_id: str, chunks: int, total_frames: int, env: Mapping[str, str],
                      targets: BatchTargets, client: Any = None,
                      only: Sequence[int] | None = None) -> Submitted:
    """Submit the render array job (or a plain job for one chunk) and the encode job that
    depends on it, each with the job contract in its container overrides.

    `only` (resume) names the chunks to render, passed in FRAMEFARM_CHUNKS; with none listed
    only the encode job is submitted.
    """
    if chunks > MAX_ARRAY_SIZE:
        suggest = math.ceil(total_frames / MAX_ARRAY_SIZE)
        raise UserError(f"{chunks} render jobs is more than AWS Batch's {MAX_ARRAY_SIZE} array "
                        f"children: set {config.FRAMES_PER_RENDER_JOB} to {suggest} or more")
    batch = batch_client(client)
    common = {name: env[name] for name in _PASSED_ON if env.get(name)}
    common[config.RUN_ID] = run_id
    groups: list[tuple[int, ...] | None] = [None] if only is None else list(chunk_groups(only))
    renders = []
    for n, group in enumerate(groups):
        render_env = {config.JOB_TYPE: "render", **common}
        if group is not None:
            render_env[config.CHUNKS] = ",".join(map(str, group))
        size = chunks if group is None else len(group)
        # One chunk is a plain job (arrays have 2 or more children): it finds no index and
        # renders its only listed chunk, or the plan's only one (names starting AWS_BATCH_ are
        # Batch's own: overrides may not set them).
        array = {"arrayProperties": {"size": size}} if size > 1 else {}
        submitted = batch.submit_job(
            jobName=job_name(run_id, "render" if n == 0 else f"render-{n + 1}"),
            jobQueue=targets.queue, jobDefinition=targets.render_definition,
            containerOverrides=_overrides(render_env), **array)
        renders.append(RenderJob(job_id=submitted["jobId"], chunks=group))
    encode_env = {config.JOB_TYPE: "encode", **common}
    if env.get(config.OUTPUT):
        encode_env[config.OUTPUT] = env[config.OUTPUT]
    depends = {"dependsOn": [{"jobId": r.job_id} for r in renders]} if renders else {}
    encode = batch.submit_job(jobName=job_name(run_id, "encode"), jobQueue=targets.queue,
                              jobDefinition=targets.encode_definition,
                              containerOverrides=_overrides(encode_env), **depends)
    settings = {**targets.to_environ(), **{k: env[k] for k in _KEPT if env.get(k)}}
    return Submitted(renders=tuple(renders), encode=encode["jobId"], settings=settings)


def record_submission(joblog: JobLog, *, run_id: str, submitted: Submitted,
                      plan_job_id: str = "", client: Any = None) -> None:
    """Write the Batch ids to the run's record (replacing an earlier submission's), and record
    SUBMITTED the encode job and each submitted chunk that has earlier attempts (so that a
    resumed chunk's old failure no longer stands for it).

    The run was cancelled meanwhile (its plan job submitted them as `framefarm cancel` ran):
    the jobs are terminated at once.
    """
    def recorded(found: RunRecord | None) -> RunRecord:
        run = found or RunRecord(run_id=run_id, created_at=now_iso())
        ids = {k: v for k, v in run.runner_ids.items() if not _submission_key(k)}
        ids.update(submitted.runner_ids())
        if plan_job_id:
            ids["plan"] = plan_job_id
        return replace(run, runner_ids=ids, runner=BatchRunner.name,
                       settings={**run.settings, **submitted.settings})

    run = joblog.update_run(run_id, recorded) or recorded(None)
    latest = {r.job: r for r in joblog.jobs(run_id)}
    size = int(run.plan.get("size") or 0)
    for job in submitted.renders:
        for name, job_id in job.children(size).items():
            if name in latest:
                _record_submitted(joblog, latest[name], runner_id=job_id)
    _record_submitted(joblog, latest.get("encode"), run_id=run_id, kind="encode",
                      runner_id=submitted.encode)
    after = joblog.get_run(run_id)
    if after is not None and after.cancelled_at:
        terminate_run(joblog, run_id, reason="the run was cancelled as its jobs were submitted",
                      client=client)


def plan_hook(environ: Mapping[str, str]) -> Callable[[Planned], None] | None:
    """What a plan job in a Batch container does once it has planned, when
    FRAMEFARM_JOB_QUEUE names where (`framefarm job` attaches it): submit the render array job
    and the encode job, and record their ids. An earlier attempt of this plan job that
    submitted them is not repeated, nor does a cancelled run get them (`resume` submits them).
    They join the plan's trace: as its siblings under the upstream span, else its children."""
    targets = BatchTargets.from_environ(environ)
    if targets is None:
        return None

    def submit(planned: Planned) -> None:
        ids = planned.before.runner_ids
        if ("render" in ids and "encode" in ids) or planned.before.cancelled_at:
            return
        submitted = submit_downstream(run_id=planned.run_id, chunks=planned.plan.size,
                                      total_frames=planned.plan.total_frames,
                                      env=planned.contract, targets=targets)
        record_submission(planned.joblog, run_id=planned.run_id, submitted=submitted,
                          plan_job_id=planned.job_id)

    return submit


def _record_submitted(joblog: JobLog, last: JobRecord | None, *, runner_id: str,
                      run_id: str = "", kind: JobKind = "render") -> None:
    """Record a submitted job's next attempt SUBMITTED (or take over its last attempt when that
    never started), naming its Batch job; its container takes the record over."""
    if last is not None and last.status in NOT_STARTED:
        with contextlib.suppress(StatusConflict):  # it started meanwhile
            joblog.update_job(last, runner_id=runner_id)
        return
    with contextlib.suppress(StatusConflict):  # its container got there first
        joblog.start_job(run_id=last.run_id if last else run_id, kind=last.kind if last else kind,
                         index=last.index if last else None,
                         attempt=last.attempt + 1 if last else 1, status="SUBMITTED",
                         runner_id=runner_id, trace_id=tracing.current_trace_id())


def require_cloud_backends(storage_url: str, joblog_url: str) -> None:
    """Containers on AWS Batch cannot see this machine's files: storage and job log must be
    reachable from them."""
    BatchRunner.check_backends(storage_url, joblog_url)


def batch_job_ids(run: RunRecord, *, chunks: int) -> dict[str, str]:
    """Job-log name -> Batch job id of each job of the run's latest submission."""
    ids: dict[str, str] = {}
    if run.runner_ids.get("plan"):
        ids["plan"] = run.runner_ids["plan"]
    for job in render_jobs(run.runner_ids):
        ids.update(job.children(chunks))
    if run.runner_ids.get("encode"):
        ids["encode"] = run.runner_ids["encode"]
    return ids


def _describe(batch: Any, job_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    id_list = list(dict.fromkeys(job_ids))
    for start in range(0, len(id_list), 100):  # DescribeJobs takes 100 ids a call
        for job in batch.describe_jobs(jobs=id_list[start:start + 100])["jobs"]:
            found[job["jobId"]] = job
    return found


def batch_statuses(run: RunRecord, *, chunks: int, client: Any = None) -> dict[str, dict[str, str]]:
    """What AWS Batch says of a run's jobs: job name -> status, reason and job id."""
    ids = batch_job_ids(run, chunks=chunks)
    if not ids:
        return {}
    described = _describe(batch_client(client), list(ids.values()))
    return {name: {"status": job["status"], "reason": job.get("statusReason", ""),
                   "runner_id": job_id}
            for name, job_id in ids.items() if (job := described.get(job_id)) is not None}


def terminate_run(joblog: JobLog, run_id: str, *, reason: str, client: Any = None) -> list[str]:
    """TerminateJob on each of the run's Batch jobs that has not finished — the plan job, each
    render job (Batch ends an array's children with it; the running ones are terminated too,
    so they stop at once), the encode job — and note it in the run's record; what was
    terminated, in a few words each."""
    batch = batch_client(client)
    said: list[str] = []
    done: set[str] = set()
    for _ in range(3):  # a plan job that is submitting the downstream jobs adds them meanwhile
        run = joblog.get_run(run_id)
        if run is None:
            break
        todo = [(job_id, what) for job_id, what in _unfinished(run, joblog, batch)
                if job_id not in done]
        if not todo:
            break
        for job_id, what in todo:
            batch.terminate_job(jobId=job_id, reason=reason[:1024])
            done.add(job_id)
            if what:
                said.append(what)
    if done:
        joblog.update_run(run_id, lambda run: replace(
            run, runner_ids={**run.runner_ids, "terminated": now_iso()}) if run else None)
    return said


def _unfinished(run: RunRecord, joblog: JobLog, batch: Any) -> list[tuple[str, str]]:
    """The Batch ids of the run's jobs that have not finished, each with a few words ("" for a
    running array child). Finished: Batch failed it, or the job log has its last attempt final
    and Batch does not run it (a job log's success is the job's own word, as Batch's is not
    where moto stands in for it)."""
    chunks = int(run.plan.get("size") or 0)
    mine = {r.job: r.status for r in joblog.jobs(run.run_id)}  # each job's last attempt
    theirs = {name: s["status"] for name, s in batch_statuses(run, chunks=chunks,
                                                             client=batch).items()}

    def finished(name: str) -> bool:
        said = theirs.get(name, "")
        return said == "FAILED" or (mine.get(name, "") in TERMINAL_STATUSES and said not in ACTIVE)

    def started(name: str) -> bool:
        return bool({mine.get(name, ""), theirs.get(name, "")} & {"STARTING", "RUNNING"})

    todo: list[tuple[str, str]] = []
    if run.runner_ids.get("plan") and not finished("plan"):
        todo.append((run.runner_ids["plan"], "the plan job"))
    for job in render_jobs(run.runner_ids):
        children = job.children(chunks)
        if all(finished(name) for name in children):
            continue
        running = [job_id for name, job_id in children.items()
                   if job_id != job.job_id and not finished(name) and started(name)]
        todo.append((job.job_id, f"render job {job.job_id}"
                     + (f" ({len(running)} running)" if running else "")))
        todo += [(job_id, "") for job_id in running]
    if run.runner_ids.get("encode") and not finished("encode"):
        todo.append((run.runner_ids["encode"], "the encode job"))
    return todo


def _record_plan_submission(joblog: JobLog, run_id: str, job_id: str,
                            settings: Mapping[str, str]) -> None:
    """Record the submitted plan job without undoing what the plan container may already have
    written (it can start, even finish, before this runs): its attempt record wins, and the
    run's record is merged, not replaced."""
    with contextlib.suppress(StatusConflict):  # the plan job's own record is further along
        joblog.start_job(run_id=run_id, kind="plan", attempt=1, status="SUBMITTED", runner_id=job_id,
                         trace_id=tracing.current_trace_id())
    def recorded(found: RunRecord | None) -> RunRecord:
        run = found or RunRecord(run_id=run_id, created_at=now_iso())
        return replace(run, runner_ids={**run.runner_ids, "plan": job_id},
                       runner=BatchRunner.name, settings={**run.settings, **settings})

    joblog.update_run(run_id, recorded)


@contextlib.contextmanager
def _no_interruptions() -> Iterator[None]:
    """A second Ctrl-C (or SIGTERM) waits while the run's jobs are being terminated."""
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread: nothing to hold off
            previous[sig] = signal.signal(sig, signal.SIG_IGN)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass(frozen=True, kw_only=True)
class Resumed:
    """A remote run being resumed (BatchRunner._resumed)."""

    run: RunRecord
    storage: Any
    joblog: JobLog
    todo: list[int]
    local_output: str


class BatchRunner(Runner):
    """Runs the pipeline on AWS Batch: submit the plan job (or plan here and submit the render
    and encode jobs), then optionally follow the run through the job log and DescribeJobs."""

    name = "batch"
    start_cost_seconds = 20.0
    max_chunks = MAX_ARRAY_SIZE
    backend_reach = "anywhere"

    @classmethod
    def unreachable(cls, urls: list[str]) -> str:
        return (f"AWS Batch containers cannot reach {' or '.join(urls)}: use --storage "
                "s3://BUCKET/PREFIX and --joblog dynamodb://TABLE (the stack's outputs)")

    def __init__(self, *, workers: int | None = None, targets: BatchTargets | None = None,
                 plan_here: bool = False, wait: bool = False, poll_seconds: float = 5.0,
                 client: Any = None, kept: Mapping[str, str] | None = None) -> None:
        del workers  # Batch's compute environment decides how many jobs run at once
        self.targets = targets
        self.plan_here = plan_here
        self.wait = wait
        self.poll_seconds = poll_seconds
        self.client = client
        self.kept = dict(kept or {})
        """Contract variables of the run being resumed (its frame timeout …), from its record."""

    def settings(self) -> dict[str, str]:
        """The job queue and job definitions (what resume and cancel rebuild the runner from)."""
        return self.targets.to_environ() if self.targets else {}

    @classmethod
    def reopen(cls, settings: Mapping[str, str], **options: Any) -> BatchRunner:
        """The runner of a run on AWS Batch, from its record's settings; resume follows the run
        to its end unless told not to (`wait=False`)."""
        options.setdefault("targets", BatchTargets.from_environ(settings))
        options.setdefault("wait", True)
        return cls(kept={k: settings[k] for k in _KEPT if settings.get(k)}, **options)

    def _targets(self, env: Mapping[str, str]) -> BatchTargets:
        import os

        targets = self.targets or BatchTargets.from_environ({**os.environ, **env})
        if targets is None:
            raise UserError(f"--runner batch needs a job queue and job definitions: pass "
                            f"--stack NAME, or set {config.JOB_QUEUE}, "
                            f"{config.RENDER_JOB_DEFINITION} and {config.ENCODE_JOB_DEFINITION}")
        return targets

    @classmethod
    def job_statuses(cls, run: RunRecord, *, chunks: int) -> dict[str, dict[str, str]]:
        """DescribeJobs of the run's latest submission (a job that failed to start is only
        there)."""
        return batch_statuses(run, chunks=chunks)

    def run(self, request: RunRequest, *, on_progress: ProgressCallback | None = None) -> RunResult:
        """Start the run on AWS Batch; with `wait`, follow it to the end."""
        from framefarm.job import JobEnv, run_job
        from framefarm.steps import new_run_id
        from framefarm.storage import open_storage

        env = dict(request.env)
        require_cloud_backends(env[config.STORAGE], env[config.JOBLOG])
        targets = self._targets(env)
        env.update({**targets.to_environ(), **self.sizing_env()})
        env.pop(config.PLAN_JOB_DEFINITION, None)  # the plan job needs no job definition of its own
        local_output = take_local_output(env)
        storage = open_storage(env[config.STORAGE])
        joblog = open_joblog(env[config.JOBLOG])
        run_id = env.setdefault(config.RUN_ID, new_run_id())
        if not self.plan_here:
            stage_sketch(env, storage)  # where the plan job finds it
        if self.plan_here:
            here = {**env, config.JOB_TYPE: "plan"}
            plan = run_job(replace(JobEnv.from_environ(here), after_plan=plan_hook(here)),
                           storage=storage, joblog=joblog)
            if not plan.succeeded:
                return RunResult(run_id=run_id, succeeded=False, plan=plan, failures=(plan,))
        else:
            if not targets.plan_definition:
                raise UserError(f"submitting the plan job needs its job definition: pass --stack "
                                f"or set {config.PLAN_JOB_DEFINITION} (or plan here: --plan-here)")
            batch = batch_client(self.client)
            submitted = batch.submit_job(
                jobName=job_name(run_id, "plan"), jobQueue=targets.queue,
                jobDefinition=targets.plan_definition,
                containerOverrides=_overrides({config.JOB_TYPE: "plan", **env}))
            _record_plan_submission(joblog, run_id, submitted["jobId"], {
                **targets.to_environ(), **{k: env[k] for k in _KEPT if env.get(k)}})
        return self._finish(run_id, joblog, storage, local_output, on_progress)

    def resume(self, request: ResumeRequest, *,
               on_progress: ProgressCallback | None = None) -> RunResult:
        """Submit the request's chunks (none: only the encode job) as a render job over their
        FRAMEFARM_CHUNKS and an encode job that depends on it; with `wait`, follow the run."""
        env = {**self.kept, **request.env}
        require_cloud_backends(env[config.STORAGE], env[config.JOBLOG])
        targets = self._targets(env)
        resumed = self._resumed(request, env)
        run_id, run, joblog, storage = resumed.run.run_id, resumed.run, resumed.joblog, resumed.storage
        size, todo, local_output = int(run.plan["size"]), resumed.todo, resumed.local_output
        submitted = submit_downstream(
            run_id=run_id, chunks=size, total_frames=int(run.plan["total_frames"]), env=env,
            targets=targets, client=self.client, only=None if todo == list(range(size)) else todo)
        record_submission(joblog, run_id=run_id, submitted=submitted, client=self.client)
        return self._finish(run_id, joblog, storage, local_output, on_progress)

    def _resumed(self, request: ResumeRequest, env: dict[str, str]) -> Resumed:
        """What resuming a remote run starts from: its storage and job log opened, its record
        (refused while its earlier jobs still run: `_take_over`), the chunks to render in order,
        and where the video goes on this machine. `env` loses an output that is the run's own
        video (its encode job writes it there anyway) and a local output path."""
        from framefarm.storage import open_storage

        storage = open_storage(env[config.STORAGE])
        joblog = open_joblog(env[config.JOBLOG])
        run = joblog.get_run(request.run.run_id) or request.run
        self._take_over(run, joblog)
        if env.get(config.OUTPUT) == storage.url_for(f"runs/{run.run_id}/output.mp4"):
            del env[config.OUTPUT]
        return Resumed(run=run, storage=storage, joblog=joblog, todo=sorted(request.chunks),
                       local_output=take_local_output(env))

    def cancel(self, run: RunRecord, *, joblog: JobLog) -> str:
        """Terminate the run's unfinished Batch jobs and record their open attempts CANCELLED."""
        return self._stop(run.run_id, joblog, reason="cancelled by `framefarm cancel`")

    def _stop(self, run_id: str, joblog: JobLog, *, reason: str) -> str:
        said = terminate_run(joblog, run_id, reason=reason, client=self.client)
        close_open_attempts(joblog, run_id, status="CANCELLED", error=reason)
        if not said:
            return "its AWS Batch jobs had all finished"
        return "terminated on AWS Batch: " + ", ".join(said)

    def _take_over(self, run: RunRecord, joblog: JobLog) -> None:
        """Refuse to resume a run whose earlier jobs Batch still runs or queues, unless they were
        terminated (`framefarm cancel`): those are terminated again and left to end."""
        ids = {job_id: what for job_id, what in
               [(run.runner_ids.get("plan", ""), "the plan job")]
               + [(j.job_id, f"render job {j.job_id}") for j in render_jobs(run.runner_ids)]
               + [(run.runner_ids.get("encode", ""), "the encode job")] if job_id}
        described = _describe(batch_client(self.client), list(ids)) if ids else {}
        active = [f"{ids[i]} {job['status']}" for i, job in described.items()
                  if job["status"] in ACTIVE]
        if not active:
            return
        if run.runner_ids.get("terminated"):
            terminate_run(joblog, run.run_id, reason="cancelled by `framefarm cancel`",
                          client=self.client)
            return
        raise UserError(f"run {run.run_id} still has jobs on AWS Batch ({', '.join(active)}): "
                        f"wait for them to end (`framefarm status {run.run_id}`) or stop them "
                        f"with `framefarm cancel {run.run_id}`, then resume it")

    def _finish(self, run_id: str, joblog: JobLog, storage: Any, local_output: str,
                on_progress: ProgressCallback | None) -> RunResult:
        if not self.wait:
            return RunResult(run_id=run_id, succeeded=True, waited=False,
                             output_url=storage.url_for(output_key(run_id)))
        result = self._follow(run_id, joblog, on_progress)
        if result.succeeded:
            fetch_output(storage, run_id, local_output)
        return result

    def _follow(self, run_id: str, joblog: JobLog,
                on_progress: ProgressCallback | None) -> RunResult:
        """Poll the job log and DescribeJobs until encode finishes, a job fails for good or the
        run is cancelled; Ctrl-C (or SIGTERM) terminates the run's jobs."""
        try:
            return self._poll(run_id, joblog, on_progress)
        except KeyboardInterrupt:
            with _no_interruptions():
                joblog.mark_cancelled(run_id)
                self._stop(run_id, joblog, reason="cancelled: the `--wait` that followed it was "
                                                  "stopped (Ctrl-C or SIGTERM)")
            return RunResult(run_id=run_id, succeeded=False, cancelled=True)

    def _statuses(self, run: RunRecord, chunks: int) -> dict[str, dict[str, str]]:
        """What the runner says of the run's jobs while it follows the run."""
        return batch_statuses(run, chunks=chunks, client=self.client)

    def _ended(self, run: RunRecord) -> RunResult | None:
        """How the run ended when the job log cannot say (a workflow engine above Batch that
        failed or was stopped); None: follow on."""
        del run
        return None

    def _poll(self, run_id: str, joblog: JobLog,
              on_progress: ProgressCallback | None) -> RunResult:
        from framefarm.report import merged_jobs, run_status

        began = time.monotonic()
        pause = min(1.0, self.poll_seconds)  # quick at first, then every poll_seconds
        while True:
            with tracing.untraced():  # polling is waiting, not work: no spans for it
                run = joblog.get_run(run_id)
                plan = dict(run.plan) if run else {}
                chunks = int(plan.get("size") or 0)
                records = merged_jobs(joblog.jobs(run_id),
                                      self._statuses(run, chunks) if run else {})
            latest = list({r.job: r for r in records}.values())  # each job's last attempt
            status = run_status(latest, cancelled=bool(run and run.cancelled_at))
            if status not in ("SUCCEEDED", "FAILED", "CANCELLED") and run is not None:
                with tracing.untraced():
                    ended = self._ended(run)
                if ended is not None:
                    return ended
            if on_progress is not None and chunks:
                on_progress(Progress.of(run_id, latest, total_frames=int(plan["total_frames"]),
                                        chunks=chunks, elapsed=time.monotonic() - began))
            if status == "CANCELLED":
                return RunResult(run_id=run_id, succeeded=False, cancelled=True)
            if status in ("SUCCEEDED", "FAILED"):
                failures = tuple(JobOutcome(job=r.job, run_id=run_id, succeeded=False,
                                            index=r.index, exit_code=r.exit_code or 1,
                                            error=r.error)
                                 for r in latest if r.status == "FAILED")
                return RunResult(run_id=run_id, succeeded=status == "SUCCEEDED",
                                 failures=failures)
            time.sleep(pause)
            pause = min(pause * 2, self.poll_seconds)



# CloudFormation output names (deploy/cloudformation.yaml) -> what they configure.
STACK_OUTPUTS = {
    "JobQueue": config.JOB_QUEUE,
    "PlanJobDefinition": config.PLAN_JOB_DEFINITION,
    "RenderJobDefinition": config.RENDER_JOB_DEFINITION,
    "EncodeJobDefinition": config.ENCODE_JOB_DEFINITION,
    "StorageUrl": config.STORAGE,
    "JobLogUrl": config.JOBLOG,
    "StateMachine": config.STATE_MACHINE,
}


def stack_settings(stack: str, *, client: Any = None) -> dict[str, str]:
    """The contract variables a deployed stack's outputs name (queue, job definitions, bucket,
    table), keyed by variable name."""
    if client is None:
        from framefarm._aws import client as aws_client

        client = aws_client("cloudformation")
    try:
        stacks = client.describe_stacks(StackName=stack)["Stacks"]
    except Exception as exc:  # botocore's ClientError: the stack does not exist
        raise UserError(f"cannot read CloudFormation stack {stack!r} ({exc}): deploy "
                        "deploy/cloudformation.yaml first, or check --stack and AWS_REGION") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    return {variable: outputs[key] for key, variable in STACK_OUTPUTS.items() if key in outputs}
