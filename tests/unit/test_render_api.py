"""One `prepare_run` behind `framefarm render` and `framefarm.render()`: the Python API refuses
what the command refuses, with the same line, before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

import framefarm
from framefarm.errors import UserError
from tests.conftest import EXAMPLES, run_cli

SKETCH = str(EXAMPLES / "plasma.py")


@pytest.mark.parametrize("sketch, output, options", [
    ("missing.py", "x.mp4", {}),                                    # no such sketch
    (SKETCH, "videos/", {}),                                        # an output that is a folder
    (SKETCH, "x.gif", {}),                                          # not an MP4
    (SKETCH, "x.mp4", {"storage": "memory://here"}),               # workers cannot share it
    (SKETCH, "x.mp4", {"joblog": "memory://here"}),
    (SKETCH, "x.mp4", {"storage": "ftp://host/x"}),                # no such storage
    (SKETCH, "x.mp4", {"run_id": "a/b"}),                           # not a safe run id
])
def test_the_python_api_refuses_what_the_command_refuses_with_the_same_line(
        workdir: Path, sketch: str, output: str, options: dict[str, str]) -> None:
    (workdir / "videos").mkdir()
    flags = [arg for name, value in options.items()
             for arg in (f"--{name.replace('_', '-')}", value)]
    done = run_cli("render", sketch, "-o", output, *flags, cwd=workdir)
    assert done.returncode == 2, done.stderr
    said = done.stderr.strip()
    with pytest.raises(UserError) as refused:
        framefarm.render(sketch, output, **options)  # type: ignore[arg-type]
    # the same words (argparse puts the flag's name before them and --help after)
    assert str(refused.value) in said and len(said.splitlines()) == 1, (said, refused.value)
    assert not (workdir / "framefarm-data").exists() or not list(
        (workdir / "framefarm-data").rglob("plan.json"))
