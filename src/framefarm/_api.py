"""`framefarm.render()`: the Python face of `framefarm render`; `prepare_run`, what both check
and settle before a runner starts; and the one place that turns render settings into job-contract
variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from framefarm import config
from framefarm.assets import asset_files, join_assets
from framefarm.errors import SketchError, UserError
from framefarm.runners import RunRequest, RunResult, open_runner

if TYPE_CHECKING:
    from framefarm.joblog import JobLog
    from framefarm.storage import Storage


def contract_env(*, sketch: str, output: Path, storage: str, joblog: str,
                 frames: int | None = None, per_job: int | None = None,
                 fps: str | float | None = None, size: tuple[int, int] | None = None,
                 crf: int | None = None, preset: str | None = None, run_id: str | None = None,
                 keep_frames: bool = False, size_budget: float | None = None,
                 kind: str | None = None, assets: tuple[str, ...] = ()) -> dict[str, str]:
    """The job contract's variables for one run; settings left as None are the plan's to choose."""
    env = {config.SKETCH: sketch, config.STORAGE: storage, config.JOBLOG: joblog,
           config.OUTPUT: str(output)}
    optional = {
        config.RUN_ID: run_id, config.TOTAL_FRAMES: frames, config.FRAMES_PER_RENDER_JOB: per_job,
        config.FPS: fps, config.WIDTH: size[0] if size else None,
        config.HEIGHT: size[1] if size else None, config.CRF: crf, config.PRESET: preset,
        config.KEEP_FRAMES: "1" if keep_frames else None,
        config.SIZE_BUDGET: f"{size_budget:g}" if size_budget else None,
        config.KIND: kind,
        config.ASSETS: join_assets(assets) if assets else None,
    }
    env.update({name: str(value) for name, value in optional.items() if value is not None})
    return env


@dataclass(frozen=True)
class PreparedRun:
    """A run checked and ready for its runner: its job-contract variables, and its storage and
    job log opened."""

    env: dict[str, str]
    storage: Storage
    joblog: JobLog
    output: Path


def sketch_location(sketch: str, kind: str | None = None) -> str:
    """A file sketch as an absolute path (checked now, before anything runs, with its kind:
    its suffix or `kind`); else as given."""
    from framefarm._locations import sketch_location_kind
    from framefarm.kinds import kind_of

    if sketch_location_kind(sketch) != "file":
        if kind:
            kind_of(sketch, kind)  # an unknown --kind is refused before anything runs
        return sketch
    path = Path(sketch).expanduser()
    if not path.is_file():
        raise UserError(f"sketch not found: {sketch} (give the path of a .py file with render(ctx))")
    kind_of(sketch, kind)
    return str(path.resolve())


def frame_timeout_env(flag: float | None, recorded: str = "") -> dict[str, str]:
    """FRAMEFARM_FRAME_TIMEOUT for a run's jobs: the flag, else the variable, else what the
    run recorded (resume); none: the jobs' default. Each job checks the value."""
    given = None if flag is None else f"{flag:g}"
    value = config.resolve(given, config.FRAME_TIMEOUT, recorded or None)
    return {config.FRAME_TIMEOUT: value} if value else {}


def prepare_run(sketch: str, output: str | Path, *, runner: str, storage: str | None = None,
                joblog: str | None = None, defaults: Mapping[str, str] | None = None,
                frames: int | None = None, per_job: int | None = None,
                fps: str | float | None = None, size: tuple[int, int] | None = None,
                crf: int | None = None, preset: str | None = None, run_id: str | None = None,
                keep_frames: bool = False, size_budget: float | None = None,
                frame_timeout: float | None = None, kind: str | None = None,
                assets: tuple[str, ...] = ()) -> PreparedRun:
    """What `framefarm render` and `framefarm.render()` both check and settle before a runner
    starts, in this order: the output's path, the storage (opened and written to once), the job
    log, that the runner's jobs can reach both, the sketch's location; then the job contract.
    `storage` and `joblog` are given, else their variables, else `defaults` (a Batch stack's),
    else ./framefarm-data. Bad input is a UserError: one line naming it and the fix."""
    from framefarm import limits
    from framefarm._cli_checks import check_output_path
    from framefarm.joblog import open_joblog
    from framefarm.runners import runner_class
    from framefarm.storage import open_storage

    path = check_output_path(str(output))
    if run_id:
        limits.check_run_id(run_id)
    defaults = defaults or {}
    opened = open_storage(str(config.resolve(
        storage, config.STORAGE, defaults.get(config.STORAGE) or config.default_storage_url())))
    opened.probe()  # storage that cannot be written is found before anything runs
    log = open_joblog(str(config.resolve(
        joblog, config.JOBLOG, defaults.get(config.JOBLOG) or config.default_joblog_url())))
    runner_class(runner).check_backends(opened.url, log.url)
    location = sketch_location(sketch, kind)
    if assets or Path(location).suffix == ".py":  # a missing asset is found before anything runs
        from framefarm._locations import sketch_location_kind

        if sketch_location_kind(location) == "file":
            asset_files(Path(location), assets)
    env = contract_env(sketch=location, output=path, storage=opened.url,
                       joblog=log.url, frames=frames, per_job=per_job, fps=fps, size=size,
                       crf=crf, preset=preset, run_id=run_id, keep_frames=keep_frames,
                       size_budget=size_budget, kind=kind, assets=assets)
    env.update(frame_timeout_env(frame_timeout))
    return PreparedRun(env=env, storage=opened, joblog=log, output=path)


def render(sketch: str, output: str | Path, *, frames: int | None = None,
           per_job: int | None = None, fps: str | float | None = None,
           size: tuple[int, int] | None = None, workers: int | None = None,
           storage: str | None = None, joblog: str | None = None, crf: int | None = None,
           preset: str | None = None, run_id: str | None = None, keep_frames: bool = False,
           runner: str = "local", size_budget: float | None = None,
           kind: str | None = None, assets: tuple[str, ...] = ()) -> RunResult:
    """Render `sketch` to the video `output`; raises SketchError/UserError when the run fails,
    KeyboardInterrupt when it was stopped (Ctrl-C, `framefarm cancel`). `size_budget`: percent
    the video may grow by for shorter segments (`--size-budget`); `kind`: the kind of creative
    code (`--kind`; default: the file's suffix says); `assets`: files and folders beside the
    sketch that it reads (`--asset`). Checked as `framefarm render`
    checks its flags (`prepare_run`)."""
    from framefarm import limits

    if workers:
        limits.check_workers("workers", workers)
    prepared = prepare_run(sketch, output, runner=runner, storage=storage, joblog=joblog,
                           frames=frames, per_job=per_job, fps=fps, size=size, crf=crf,
                           preset=preset, run_id=run_id, keep_frames=keep_frames,
                           size_budget=size_budget, kind=kind, assets=assets)
    result = open_runner(runner, workers=workers).run(RunRequest(env=prepared.env))
    if result.cancelled:
        raise KeyboardInterrupt(f"run {result.run_id} was cancelled: framefarm resume "
                                f"{result.run_id} finishes it")
    if not result.succeeded:
        first = result.failures[0] if result.failures else None
        text = first.error if first else f"run {result.run_id} failed"
        if first is not None and first.exit_code == UserError.exit_code:
            head, _, details = text.partition("\n")
            raise SketchError(head, details=details) if details else UserError(head)
        raise RuntimeError(text)
    return result
