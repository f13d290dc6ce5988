"""`framefarm` as a user runs it: the demo render, progress, summary, status, runs, bad input."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from framefarm.video import probe
from tests.conftest import EXAMPLES, framefarm_command, run_cli

pytestmark = pytest.mark.e2e


def test_render_summary_status_and_runs(workdir: Path) -> None:
    done = run_cli("render", str(EXAMPLES / "plasma.py"), "-o", "plasma.mp4", "--frames", "24",
                   "--size", "128x72", "--per-job", "5", "--run-id", "demo", cwd=workdir)
    assert done.returncode == 0, done.stderr
    out = workdir / "plasma.mp4"
    size = out.stat().st_size
    summary = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(rf"run demo: 24 frames in [0-9.]+ s -> {re.escape(str(out))} \([0-9.]+ (KB|MB|B)\)",
                        summary), summary
    assert size > 0 and probe(out).frames == 24
    # Not a terminal: plain progress lines, no carriage returns.
    assert "\r" not in done.stderr
    assert re.search(r"framefarm: 24/24 frames", done.stderr), done.stderr

    report = json.loads(run_cli("status", "demo", "--json", cwd=workdir).stdout)
    assert report["run_id"] == "demo" and report["status"] == "SUCCEEDED"
    kinds = [(j["kind"], j["index"], j["status"]) for j in report["jobs"]]
    assert kinds == [("plan", None, "SUCCEEDED")] + [("render", i, "SUCCEEDED") for i in range(5)] + [
        ("encode", None, "SUCCEEDED")]
    for job in report["jobs"]:
        assert {"kind", "index", "attempt", "status", "started_at", "stopped_at", "frames",
                "error"} <= set(job)
    assert sum(j["frames"] for j in report["jobs"] if j["kind"] == "render") == 24

    human = run_cli("status", "demo", cwd=workdir)
    assert "render:4" in human.stdout and "SUCCEEDED" in human.stdout

    runs = json.loads(run_cli("runs", "--json", cwd=workdir).stdout)
    assert [(r["run_id"], r["status"], r["total_frames"]) for r in runs] == [("demo", "SUCCEEDED", 24)]
    assert "demo" in run_cli("runs", cwd=workdir).stdout


def test_progress_bar_on_a_terminal(workdir: Path) -> None:
    main, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEFARM_")}
    proc = subprocess.Popen([*framefarm_command(), "render", str(EXAMPLES / "plasma.py"), "-o",
                             "p.mp4", "--frames", "30", "--size", "64x48"], cwd=workdir,
                            stdout=secondary, stderr=secondary, env=env)
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(main, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=120) == 0
    text = b"".join(chunks).decode()
    assert "\r[" in text  # redrawn in place
    assert re.search(r"\[#+\] 30/30 frames +[0-9.]+ fps +ETA 0:00", text), text
    assert "run " in text and "30 frames in" in text


@pytest.mark.parametrize("args, message", [
    (["render", "missing.py", "-o", "x.mp4"], "sketch not found: missing.py"),
    (["render", "{sketch}", "-o", "x.mp4", "--frames", "0"], "--frames: '0' must be above 0"),
    (["render", "{sketch}", "-o", "x.mp4", "--frames", "2.5"], "--frames: '2.5' is not a whole number"),
    (["render", "{sketch}", "-o", "x.mp4", "--per-job", "-3"], "--per-job: '-3' must be above 0"),
    (["render", "{sketch}", "-o", "x.mp4", "--per-job", "many"], "--per-job: 'many' is not a whole number"),
    (["render", "{sketch}", "-o", "x.mp4", "--size", "big"], "is not a size: use WIDTHxHEIGHT"),
    (["render", "{sketch}", "-o", "x.mp4", "--size", "641x480"], "even width and height, e.g. 642x480"),
    (["render", "{sketch}", "-o", "x.mp4", "--storage", "ftp://host/x"],
     "unknown storage URL 'ftp://host/x': use one of file:///path"),
    (["render", "{sketch}", "-o", "x.mp4", "--joblog", "postgres://db"],
     "unknown job log URL 'postgres://db': use one of sqlite:///"),
    (["render", "{sketch}", "-o", "/proc/nope/x.mp4"], "cannot write the output '/proc/nope/x.mp4'"),
    (["render", "{norender}", "-o", "x.mp4"], "has no render(ctx) function"),
    (["status", "no-such-run"], "run 'no-such-run' is not in the job log"),
    (["render", "{sketch}", "-o", "x.mp4", "--runner", "farm"], "unknown runner 'farm': use one of local"),
    (["render", "{sketch}", "-o", "x.mp4", "--wait"], "--wait only work with --runner batch"),
    (["render", "{sketch}", "-o", "x.mp4", "--runner", "batch"],
     "AWS Batch containers cannot reach file:///"),
])
def test_bad_input_is_one_line_and_exit_2(workdir: Path, write_sketch: Callable[..., Path],
                                          args: list[str], message: str) -> None:
    names = {"sketch": str(EXAMPLES / "plasma.py"),
             "norender": str(write_sketch("WIDTH = 64\n", "norender.py"))}
    done = run_cli(*(a.format(**names) for a in args), cwd=workdir)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_sketch_size_default_odd_is_refused(workdir: Path, write_sketch: Callable[..., Path]) -> None:
    sketch = write_sketch("""
        import numpy as np
        WIDTH, HEIGHT = 65, 48
        def render(ctx):
            return np.zeros((ctx.height, ctx.width, 3), np.uint8)
    """)
    done = run_cli("render", str(sketch), "-o", "x.mp4", "--frames", "2", cwd=workdir)
    assert done.returncode == 2
    assert "size 65x48" in done.stderr and "--size 66x48" in done.stderr


def test_existing_output_is_replaced_only_when_the_run_succeeds(
        workdir: Path, write_sketch: Callable[..., Path]) -> None:
    out = workdir / "keep.mp4"
    out.write_bytes(b"the user's earlier video")
    broken = write_sketch("def render(ctx):\n    raise RuntimeError('boom')\n", "broken.py")
    done = run_cli("render", str(broken), "-o", str(out), "--frames", "2", "--size", "64x48",
                   cwd=workdir)
    assert done.returncode == 2
    assert out.read_bytes() == b"the user's earlier video"


def test_module_function_sketch_from_the_current_folder(workdir: Path) -> None:
    (workdir / "studio.py").write_text(
        "import numpy as np\n"
        "def stripes(ctx):\n"
        "    img = np.zeros((ctx.height, ctx.width, 3), np.uint8)\n"
        "    img[:, ctx.frame % ctx.width] = 255\n"
        "    return img\n")
    done = run_cli("render", "studio:stripes", "-o", "s.mp4", "--frames", "6", "--size", "32x16",
                   "--per-job", "2", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert probe(workdir / "s.mp4").frames == 6
