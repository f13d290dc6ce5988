"""`framefarm.render()`: the Python face of `framefarm render`, and the one place that turns
render settings into job-contract variables."""

from __future__ import annotations

from pathlib import Path

from framefarm import config
from framefarm.errors import SketchError, UserError
from framefarm.runners import RunRequest, RunResult, open_runner


def contract_env(*, sketch: str, output: Path, storage: str, joblog: str,
                 frames: int | None = None, per_job: int | None = None,
                 fps: str | float | None = None, size: tuple[int, int] | None = None,
                 crf: int | None = None, preset: str | None = None, run_id: str | None = None,
                 keep_frames: bool = False, size_budget: float | None = None) -> dict[str, str]:
    """The job contract's variables for one run; settings left as None are the plan's to choose."""
    env = {config.SKETCH: sketch, config.STORAGE: storage, config.JOBLOG: joblog,
           config.OUTPUT: str(output)}
    optional = {
        config.RUN_ID: run_id, config.TOTAL_FRAMES: frames, config.FRAMES_PER_RENDER_JOB: per_job,
        config.FPS: fps, config.WIDTH: size[0] if size else None,
        config.HEIGHT: size[1] if size else None, config.CRF: crf, config.PRESET: preset,
        config.KEEP_FRAMES: "1" if keep_frames else None,
        config.SIZE_BUDGET: f"{size_budget:g}" if size_budget else None,
    }
    env.update({name: str(value) for name, value in optional.items() if value is not None})
    return env


def render(sketch: str, output: str | Path, *, frames: int | None = None,
           per_job: int | None = None, fps: str | float | None = None,
           size: tuple[int, int] | None = None, workers: int | None = None,
           storage: str | None = None, joblog: str | None = None, crf: int | None = None,
           preset: str | None = None, run_id: str | None = None, keep_frames: bool = False,
           runner: str = "local", size_budget: float | None = None) -> RunResult:
    """Render `sketch` to the video `output`; raises SketchError/UserError when the run fails,
    KeyboardInterrupt when it was stopped (Ctrl-C, `framefarm cancel`). `size_budget`: percent
    the video may grow by for shorter segments (`--size-budget`)."""
    from framefarm import limits
    from framefarm.storage import open_storage

    limits.check_output_name(str(output))
    if run_id:
        limits.check_run_id(run_id)
    if workers:
        limits.check_workers("workers", workers)
    storage = str(config.resolve(storage, config.STORAGE, config.default_storage_url()))
    open_storage(storage).probe()
    env = contract_env(
        sketch=str(Path(sketch).resolve()) if Path(sketch).is_file() else sketch,
        output=Path(output).expanduser().resolve(),
        storage=storage,
        joblog=str(config.resolve(joblog, config.JOBLOG, config.default_joblog_url())),
        frames=frames, per_job=per_job, fps=fps, size=size, crf=crf, preset=preset,
        run_id=run_id, keep_frames=keep_frames, size_budget=size_budget)
    result = open_runner(runner, workers=workers).run(RunRequest(env=env))
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
