"""matplotlib animations, unchanged (framefarm/kinds/animation.py): the script's own
FuncAnimation rendered by worker processes, each frame compared with the frame `ani.save`
itself makes (its own loop, driving a writer that keeps the frames); stateful update functions
replayed right; scripts that make no animation or draw unseeded randomness named, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from framefarm.video import probe, read_frames
from tests.conftest import EXAMPLES, psnr, render_and_encode, run_cli

pytestmark = [pytest.mark.integration]

# Runs a script as `python script.py` would, with ani.save's own loop driving a writer that keeps
# each frame it grabs (what any movie writer is given), and stores them in an .npy.
SAVED_BY_MATPLOTLIB = textwrap.dedent("""
    import io, runpy, sys
    import numpy as np
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import animation

    class Keep(animation.AbstractMovieWriter):
        frames = []
        def setup(self, fig, outfile, dpi=None):
            super().setup(fig, outfile, dpi)
        def grab_frame(self, **savefig_kwargs):
            buffer = io.BytesIO()
            self.fig.savefig(buffer, format="rgba", dpi=self.dpi, **savefig_kwargs)
            w, h = self.fig.get_size_inches() * self.dpi
            pixels = np.frombuffer(buffer.getvalue(), np.uint8)
            Keep.frames.append(pixels.reshape(int(round(h)), int(round(w)), 4)[..., :3])
        def finish(self):
            pass

    original = animation.Animation.save
    def save(self, filename, writer=None, fps=None, dpi=None, **kwargs):
        original(self, filename, writer=Keep(fps=fps or 5), dpi=dpi, **kwargs)
    animation.Animation.save = save
    runpy.run_path(sys.argv[1], run_name="__main__")
    np.save(sys.argv[2], np.stack(Keep.frames))
""")


def _saved_by_matplotlib(script: Path, tmp_path: Path) -> np.ndarray:
    runner = tmp_path / "save_with_matplotlib.py"
    runner.write_text(SAVED_BY_MATPLOTLIB)
    out = tmp_path / "saved.npy"
    subprocess.run([sys.executable, str(runner), str(script), str(out)], cwd=tmp_path,
                   check=True, capture_output=True, env={"MPLBACKEND": "Agg", "PATH": "/usr/bin"})
    frames: np.ndarray = np.load(out)
    return frames


def test_an_unchanged_script_renders_as_ani_save_does(tmp_path: Path) -> None:
    """The shipped example: a stateful update (the line grows each frame) with blit=True, in 6
    chunks on 2 workers. Size, fps and frame count come from the script and its save call; every
    frame matches ani.save's own, so every worker replayed the frames before its chunk."""
    script = EXAMPLES / "growing_line.py"
    done = run_cli("render", str(script), "-o", str(tmp_path / "line.mp4"), "--per-job", "20",
                   "--workers", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    info = probe(tmp_path / "line.mp4")
    assert (info.frames, info.width, info.height, info.fps) == (120, 640, 360, 30)
    expected = _saved_by_matplotlib(script, tmp_path)
    frames = list(read_frames(tmp_path / "line.mp4"))
    assert len(expected) == len(frames) == 120
    for i, frame in enumerate(frames):
        assert psnr(frame, expected[i]) >= 35, f"frame {i}"
    # a late frame shows the whole curve so far: unlike a frame drawn without its history
    assert psnr(frames[100], expected[100]) > psnr(frames[100], expected[40]) + 3
    assert not (tmp_path / "growing_line.mp4").exists()  # the script's own save was held
    stored = list((tmp_path / "framefarm-data").rglob("sketches/*"))
    assert [p.name.endswith(".anim.py") for p in stored] == [True]  # jobs load it as animation
    assert _mode_said(done.stdout, tmp_path) == (
        "stateful", "sketch: stateful  (its update function keeps state: each worker replays "
                    "the frames before its chunk)")


def _mode_said(rendered: str, cwd: Path) -> tuple[str, str]:
    """The mode `framefarm status` gives the run that `rendered` (render's output) names, in
    its JSON and in its text."""
    run_id = rendered.split()[1].rstrip(":")
    report = json.loads(run_cli("status", run_id, "--json", cwd=cwd).stdout)
    [line] = [x for x in run_cli("status", run_id, cwd=cwd).stdout.splitlines()
              if x.startswith("sketch:")]
    return report["sketch_mode"], line


def test_a_generator_script_without_save_gets_its_fps_from_interval(tmp_path: Path) -> None:
    script = tmp_path / "dots.py"
    script.write_text(textwrap.dedent("""
        import matplotlib.pyplot as plt
        import numpy as np
        from matplotlib.animation import FuncAnimation

        fig, ax = plt.subplots(figsize=(3.2, 2.4), dpi=50)
        ax.set_xlim(0, 10); ax.set_ylim(0, 10)
        points, = ax.plot([], [], "o")

        def steps():
            for k in range(14):
                yield k

        def update(k):
            points.set_data(np.arange(k + 1) % 10, np.arange(k + 1) // 10 * 3 + 1)
            return points,

        ani = FuncAnimation(fig, update, frames=steps, interval=125, cache_frame_data=False)
        plt.show()
        """))
    done = run_cli("render", str(script), "-o", str(tmp_path / "dots.mp4"), "--per-job", "5",
                   "--workers", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    info = probe(tmp_path / "dots.mp4")
    assert (info.frames, info.fps) == (14, 8)  # counted from the generator; 1000 / 125 ms
    assert (info.width, info.height) == (160, 120)  # the figure's inches x its dpi
    assert _mode_said(done.stdout, tmp_path)[0] == "stateless"  # set_data from k alone


@pytest.mark.parametrize("source, said", [
    ("import matplotlib.pyplot as plt\nfrom matplotlib.animation import FuncAnimation\n"
     "fig = plt.figure()\nplt.plot([1, 2])\n",
     "animation plain.py makes no matplotlib FuncAnimation when run: make one (or give a "
     "sketch with render(ctx))"),
    ("import matplotlib.pyplot as plt, numpy as np\nfrom matplotlib.animation import FuncAnimation\n"
     "fig, ax = plt.subplots(figsize=(2, 2))\nnoise = np.random.rand(8, 8)\n"
     "im = ax.imshow(noise)\n"
     "ani = FuncAnimation(fig, lambda i: (im.set_data(noise * (i + 1) % 1), im), frames=5)\n",
     "animation plain.py: frame 3 differs between two runs of the script, so its frames depend "
     "on unseeded randomness: seed it"),
])
def test_bad_animation_scripts_are_one_line(tmp_path: Path, source: str, said: str) -> None:
    script = tmp_path / "plain.py"
    script.write_text(source)
    done = run_cli("render", str(script), "-o", str(tmp_path / "p.mp4"), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"framefarm: {said}"), line


def test_an_animation_through_the_job_contract(tmp_path: Path) -> None:
    """Planned, rendered out of order and encoded by separate `framefarm job` processes (as AWS
    Batch runs them): each render job runs the script from storage and replays what it skips."""
    script = EXAMPLES / "growing_line.py"
    base = {"FRAMEFARM_STORAGE": (tmp_path / "bucket").as_uri(),
            "FRAMEFARM_JOBLOG": f"sqlite:///{tmp_path}/log.db"}
    plan = run_cli("job", cwd=tmp_path, env={
        **base, "JOB_TYPE": "plan", "FRAMEFARM_SKETCH": str(script), "TOTAL_FRAMES": "60",
        "FRAMES_PER_RENDER_JOB": "20", "FRAMEFARM_OUTPUT": str(tmp_path / "line.mp4")})
    assert plan.returncode == 0, plan.stderr
    run_id = plan.stdout.strip()
    render_and_encode(base, run_id, (2, 0, 1), cwd=tmp_path)
    expected = _saved_by_matplotlib(script, tmp_path)[:60]
    frames = list(read_frames(tmp_path / "line.mp4"))
    assert len(frames) == 60
    for i, frame in enumerate(frames):
        assert psnr(frame, expected[i]) >= 35, f"frame {i}"
