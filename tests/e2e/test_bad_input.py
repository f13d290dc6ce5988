"""Bad input through the installed `framefarm` command: one line naming the input and the fix,
exit code 2, no traceback, and nothing created; output cut short by `| head` ends quietly; and
looking at runs in an empty folder leaves it empty."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from framefarm.video import probe
from tests.conftest import EXAMPLES, framefarm_command, run_cli

pytestmark = pytest.mark.e2e

SKETCH = str(EXAMPLES / "plasma.py")


def refused(done: subprocess.CompletedProcess[str], *expected: str) -> str:
    """The one line of a refusal; checks exit code 2, no traceback, the expected words."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    assert done.stdout == ""
    return lines[0]


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


RUN_ID_FORM = "use 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit"


@pytest.mark.parametrize(("args", "expected"), [
    # run ids become file names and S3 keys
    (["render", SKETCH, "-o", "x.mp4", "--run-id", "a" * 300], ["--run-id", "is too long", RUN_ID_FORM]),
    (["render", SKETCH, "-o", "x.mp4", "--run-id", "a/b"], ["--run-id", "'a/b' is not safe", RUN_ID_FORM]),
    (["render", SKETCH, "-o", "x.mp4", "--run-id", ".."], ["--run-id", "'..'", RUN_ID_FORM]),
    (["render", SKETCH, "-o", "x.mp4", "--run-id", "my run"], ["--run-id", "'my run'", RUN_ID_FORM]),
    (["render", SKETCH, "-o", "x.mp4", "--run-id", "a\\b"], ["--run-id", RUN_ID_FORM]),
    (["status", "../../etc"], ["argument RUN", "'../../etc' is not safe", RUN_ID_FORM]),
    (["status", "a" * 300, "--json"], ["argument RUN", "is too long"]),
    (["trace", "runs/x"], ["argument RUN", "'runs/x'", RUN_ID_FORM]),
    # frame counts
    (["render", SKETCH, "-o", "x.mp4", "--frames", str(10**10)],
     ["--frames", "frames must be at most 1,000,000,000", "got 10000000000",
      "render a long video as several runs"]),
    (["render", SKETCH, "-o", "x.mp4", "--frames", str(2**63)], ["--frames", f"got {2**63}"]),
    (["render", SKETCH, "-o", "x.mp4", "--per-job", str(10**10)],
     ["--per-job", "frames per job must be at most 1,000,000,000"]),
    (["render", SKETCH, "-o", "x.mp4", "--size-budget", "150"],
     ["--size-budget", "'150' must be 0 to 100 (percent)"]),
    (["render", SKETCH, "-o", "x.mp4", "--size-budget", "some"],
     ["--size-budget", "'some' is not a percentage (e.g. 2)"]),
    # sizes libx264 and FFmpeg refuse
    (["render", SKETCH, "-o", "x.mp4", "--size", "40000x64"],
     ["--size", "size 40000x64 is too large for H.264: libx264 encodes at most 16384 pixels a side",
      "use 16384x64 or smaller"]),
    (["render", SKETCH, "-o", "x.mp4", "--size", "100000x100000"],
     ["--size", "size 100000x100000", "use 16254x16254 or smaller"]),
    (["render", SKETCH, "-o", "x.mp4", "--size", "16384x16384"],
     ["--size", "FFmpeg allocates frames of at most about 268 million pixels"]),
    # workers
    (["render", SKETCH, "-o", "x.mp4", "--workers", "1000"],
     ["--workers", "workers must be at most 256, got 1000", "more workers than CPUs only share them"]),
    (["worker", "--workers", "1000"], ["--workers", "workers must be at most 256, got 1000"]),
    # outputs that are no MP4 file
    (["render", SKETCH, "-o", "x.avi"], ["output 'x.avi' names a .avi file", "framefarm writes H.264 in MP4",
                                         "name the output .mp4, e.g. x.mp4"]),
    (["render", SKETCH, "-o", "anim.gif"], ["output 'anim.gif'", "e.g. anim.mp4"]),
    (["render", SKETCH, "-o", "new/folder/x.mkv"], ["output 'new/folder/x.mkv'", "e.g. new/folder/x.mp4"]),
    (["render", SKETCH, "-o", "video"], ["output 'video' names no .mp4 file", "e.g. video.mp4"]),
    # numbers that are no limit
    (["render", SKETCH, "-o", "x.mp4", "--runner", "temporal", "--heartbeat-timeout", "inf"],
     ["--heartbeat-timeout", "'inf' must be a finite number"]),
    (["trace", "demo", "--width", str(10**9)], ["--width", "is more than 1000 columns"]),
])
def test_bad_input_is_one_line_exit_2_and_creates_nothing(workdir: Path, args: list[str],
                                                         expected: list[str]) -> None:
    done = run_cli(*args, cwd=workdir)
    refused(done, *expected)
    assert files_in(workdir) == []  # no framefarm-data, no output folder


def test_sketch_size_the_encoder_refuses(workdir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A sketch's WIDTH/HEIGHT meet the same limit, in the plan job."""
    sketch = tmp_path_factory.mktemp("sketches") / "wide.py"
    sketch.write_text("import numpy as np\nWIDTH, HEIGHT = 40000, 64\n"
                      "def render(ctx):\n    return np.zeros((ctx.height, ctx.width, 3), np.uint8)\n")
    done = run_cli("render", str(sketch), "-o", "x.mp4", "--frames", "2", cwd=workdir)
    refused(done, "size 40000x64 is too large for H.264", "use --size 16384x64 or smaller")
    assert not (workdir / "x.mp4").exists()


@pytest.mark.parametrize(("env", "expected"), [
    ({"FRAMEFARM_WIDTH": "40000", "FRAMEFARM_HEIGHT": "64"}, "size 40000x64 is too large for H.264"),
    ({"TOTAL_FRAMES": str(2**63)}, "frames must be at most 1,000,000,000"),
    ({"FRAMES_PER_RENDER_JOB": str(10**10)}, "frames per job must be at most 1,000,000,000"),
])
def test_job_contract_meets_the_same_limits(workdir: Path, env: dict[str, str], expected: str) -> None:
    done = run_cli("job", cwd=workdir, env={"JOB_TYPE": "plan", "FRAMEFARM_SKETCH": SKETCH, **env})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert expected in done.stderr, done.stderr


def test_storage_that_cannot_be_made(workdir: Path) -> None:
    """--storage file:///proc/nope: the first write names the folder (exit 2, no traceback)."""
    done = run_cli("render", SKETCH, "-o", "x.mp4", "--frames", "2", "--size", "32x16",
                   "--storage", "file:///proc/nope", cwd=workdir)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert ("framefarm: cannot write to storage folder /proc/nope (No such file or directory): use "
            "a folder you can write to, with --storage or FRAMEFARM_STORAGE") in done.stderr
    assert not (workdir / "x.mp4").exists()


def test_storage_that_cannot_be_made_is_found_before_anything_runs(workdir: Path) -> None:
    done = run_cli("render", SKETCH, "-o", "x.mp4", "--frames", "2", "--size", "32x16",
                   "--storage", "file:///proc/nope", cwd=workdir)
    refused(done, "cannot write to storage folder /proc/nope")
    assert files_in(workdir) == []


# -- looking at runs leaves an empty folder empty ------------------------------------------------

def test_status_and_runs_in_an_empty_folder(workdir: Path) -> None:
    done = run_cli("runs", cwd=workdir)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    done = run_cli("runs", "--json", cwd=workdir)
    assert (done.returncode, json.loads(done.stdout), done.stderr) == (0, [], "")
    for args in (["status", "demo"], ["status", "demo", "--json"]):
        line = refused(run_cli(*args, cwd=workdir), "run 'demo' is not in the job log sqlite:///")
        assert "see `framefarm runs`" in line
    refused(run_cli("trace", "demo", cwd=workdir), "run 'demo' has no stored spans")
    elsewhere = workdir / "no" / "such" / "log.sqlite3"
    refused(run_cli("status", "demo", "--joblog", f"sqlite:///{elsewhere}", cwd=workdir),
            f"is not in the job log sqlite:///{elsewhere}")
    assert files_in(workdir) == []


# -- output cut short ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with one finished run, 'demo' (written to an .m4v, an MP4 by another name)."""
    folder = tmp_path_factory.mktemp("rendered")
    done = run_cli("render", SKETCH, "-o", "demo.m4v", "--frames", "4", "--size", "32x16",
                   "--per-job", "2", "--run-id", "demo", cwd=folder)
    assert done.returncode == 0, done.stderr
    assert probe(folder / "demo.m4v").frames == 4
    return folder


def run_into_closed_pipe(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `framefarm ARGS` with stdout a pipe whose reader has gone, as after `| head -1`
    (made certain: the reader is closed before the command writes anything)."""
    reader, writer = os.pipe()
    os.close(reader)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRAMEFARM_", "OTEL_"))}
    try:
        return subprocess.run([*framefarm_command(), *args], cwd=cwd, stdout=writer,
                              stderr=subprocess.PIPE, text=True, env=env, timeout=120, check=False)
    finally:
        os.close(writer)


@pytest.mark.parametrize("args", [["status", "demo", "--json"], ["status", "demo"],
                                  ["runs", "--json"], ["runs"], ["trace", "demo", "--json"],
                                  ["trace", "demo"]])
def test_a_reader_that_went_away_ends_quietly(rendered: Path, args: list[str]) -> None:
    done = run_into_closed_pipe(*args, cwd=rendered)
    assert done.stderr == ""  # no BrokenPipeError, no "Exception ignored" at exit
    assert done.returncode == 141  # 128 + SIGPIPE, as for any command that `head` stopped


def test_head_reads_the_first_line(rendered: Path) -> None:
    done = subprocess.run(f"{framefarm_command()[0]} runs --json | head -n 1", shell=True,
                          cwd=rendered, capture_output=True, text=True, timeout=120, check=False)
    assert (done.stdout, done.stderr, done.returncode) == ("[\n", "", 0)


def test_names_that_are_mp4_files_are_taken(rendered: Path) -> None:
    runs = json.loads(run_cli("runs", "--json", cwd=rendered).stdout)
    assert [(r["run_id"], r["status"]) for r in runs] == [("demo", "SUCCEEDED")]
    assert runs[0]["output"].endswith("demo.m4v")
