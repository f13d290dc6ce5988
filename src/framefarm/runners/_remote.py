"""What a runner whose jobs may run on other machines (AWS Batch, Temporal workers elsewhere)
does on the user's machine around a run: put a local sketch file where its jobs can read it,
and bring the finished video back to the path the user named."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from framefarm import config
from framefarm._locations import sketch_location_kind
from framefarm.storage import is_url

if TYPE_CHECKING:
    from framefarm.storage import Storage


def stage_sketch(env: dict[str, str], storage: Storage) -> None:
    """A sketch given as a local file goes to storage (sketches/{sha256}.py, once) and `env`
    names it there; a module or a storage URL stays as it is."""
    from framefarm.assets import parse_assets
    from framefarm.steps.plan import store_sketch_file

    location = env.get(config.SKETCH, "")
    if location and sketch_location_kind(location) == "file" and Path(location).is_file():
        env[config.SKETCH] = store_sketch_file(
            Path(location), storage, kind=env.get(config.KIND) or None,
            assets=tuple(parse_assets(env.get(config.ASSETS, ""))))
        env.pop(config.ASSETS, None)  # in the bundle now, beside the sketch


def take_local_output(env: dict[str, str]) -> str:
    """The local path the video is to be downloaded to once encoded, taken out of `env` (the
    encode job writes it into the run's storage); "" when the output is a storage URL, which
    stays in `env` for the encode job to write to, or when none was named."""
    output = env.get(config.OUTPUT, "")
    if not output or is_url(output):
        return ""
    del env[config.OUTPUT]
    return output


def fetch_output(storage: Storage, run_id: str, local_output: str) -> None:
    """Download the run's video to `local_output` (nothing when that is "")."""
    from framefarm.steps._keys import output_key

    if local_output:
        storage.get_file(output_key(run_id), Path(local_output))
