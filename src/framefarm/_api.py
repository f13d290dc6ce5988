"""`framefarm.render()`: the Python face of `framefarm render`."""

from __future__ import annotations

from pathlib import Path

from framefarm import config
from framefarm.errors import SketchError, UserError
from framefarm.runners import RunRequest, RunResult, open_runner


def render(sketch: str, output: str | Path, *, frames: int | None = None,
           per_job: int | None = None, fps: str | float | None = None,
           size: tuple[int, int] | None = None, workers: int | None = None,
           storage: str | None = None, joblog: str | None = None, crf: int | None = None,
           preset: str | None = None, run_id: str | None = None,
           runner: str = "local") -> RunResult:
    """Render `sketch` to the video `output`; raises SketchError/UserError when the run fails."""
    output_path = Path(output).expanduser().resolve()
    env = {
        config.SKETCH: str(Path(sketch).resolve()) if Path(sketch).is_file() else sketch,
        config.STORAGE: str(config.resolve(storage, config.STORAGE, config.default_storage_url())),
        config.JOBLOG: str(config.resolve(joblog, config.JOBLOG, config.default_joblog_url())),
        config.OUTPUT: str(output_path),
    }
    optional = {config.TOTAL_FRAMES: frames, config.FRAMES_PER_RENDER_JOB: per_job,
                config.FPS: fps, config.CRF: crf, config.PRESET: preset, config.RUN_ID: run_id,
                config.WIDTH: size[0] if size else None, config.HEIGHT: size[1] if size else None}
    env.update({k: str(v) for k, v in optional.items() if v is not None})
    result = open_runner(runner, workers=workers).run(RunRequest(env=env))
    if not result.succeeded:
        first = result.failures[0] if result.failures else None
        text = first.error if first else f"run {result.run_id} failed"
        if first is not None and first.exit_code == UserError.exit_code:
            head, _, details = text.partition("\n")
            raise SketchError(head, details=details) if details else UserError(head)
        raise RuntimeError(text)
    return result
