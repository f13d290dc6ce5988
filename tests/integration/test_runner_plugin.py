"""A runner from another package: registered through the `framefarm.runners` entry-point group,
its flags join `framefarm render` when it is named, and it runs a whole video, as a built-in
runner does. The package is a real installed distribution (a .dist-info folder on the path)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from framefarm.video import probe
from tests.conftest import EXAMPLES, run_cli

pytestmark = pytest.mark.integration

PLUGIN = '''
from framefarm.runners._front import RunnerFront
from framefarm.runners.local import LocalRunner


class EchoRunner(LocalRunner):
    """The local runner under another name, saying its note first."""

    name = "echo"

    def __init__(self, *, note: str = "", **options):
        super().__init__(**options)
        if note:
            self.announce(f"echo says {note}")


class EchoFront(RunnerFront):
    name = "echo"
    runner = "echo_runner:EchoRunner"
    title = "Echo"

    def add_arguments(self, group):
        group.add_argument("--echo-note", dest="echo_note", help="what to say first")

    def options(self, args, common, *, announce):
        return {}, {**common, "note": args.echo_note or ""}
'''


@pytest.fixture
def plugin(tmp_path: Path) -> dict[str, str]:
    """echo_runner, installed as the distribution echo-runner 1.0 under tmp_path/site."""
    site = tmp_path / "site"
    (site / "echo_runner-1.0.dist-info").mkdir(parents=True)
    (site / "echo_runner.py").write_text(PLUGIN)
    (site / "echo_runner-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: echo-runner\nVersion: 1.0\n")
    (site / "echo_runner-1.0.dist-info" / "entry_points.txt").write_text(
        "[framefarm.runners]\necho = echo_runner:EchoFront\n")
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


def test_a_runner_from_another_package_renders_a_video(workdir: Path,
                                                      plugin: dict[str, str]) -> None:
    helped = run_cli("render", "--runner", "echo", "--help", cwd=workdir, env=plugin)
    assert helped.returncode == 0 and "Echo (--runner echo):" in helped.stdout
    assert "--echo-note ECHO_NOTE" in helped.stdout
    done = run_cli("render", str(EXAMPLES / "circles.py"), "-o", "echo.mp4", "--frames", "6",
                   "--size", "64x48", "--runner", "echo", "--echo-note", "hello",
                   "--run-id", "echo", cwd=workdir, env=plugin)
    assert done.returncode == 0, done.stderr
    assert "framefarm: echo says hello" in done.stderr
    assert probe(workdir / "echo.mp4").frames == 6
    # its flag is its own: refused for a built-in runner, as Batch's and Temporal's are
    stray = run_cli("render", str(EXAMPLES / "circles.py"), "-o", "x.mp4", "--echo-note", "hi",
                    cwd=workdir, env=plugin)
    assert stray.returncode == 2 and "unrecognized arguments: --echo-note" in stray.stderr
    # without the package, the name is unknown, and the known ones are listed
    unknown = run_cli("render", str(EXAMPLES / "circles.py"), "-o", "x.mp4", "--runner", "echo",
                      cwd=workdir)
    assert unknown.returncode == 2
    assert "unknown runner 'echo': use one of local, batch, temporal" in unknown.stderr
