"""Storage and a job log from another package: registered through the `framefarm.storage` and
`framefarm.joblogs` entry-point groups, chosen by URL scheme like the built-ins, used by the
driver and by every worker process, and refused by a runner whose jobs they cannot reach. The
package is a real installed distribution (a .dist-info folder on the path)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import pytest

from framefarm import config, joblog, storage
from framefarm.errors import UserError
from framefarm.joblog import open_joblog
from framefarm.runners import runner_class
from framefarm.sketch import FrameSource, load_sketch
from framefarm.storage import open_storage
from framefarm.video import read_frames
from tests.conftest import EXAMPLES, psnr, run_cli

pytestmark = pytest.mark.integration

PLUGIN = '''
import os
from pathlib import Path

from framefarm.joblog.sqlite import SqliteJobLog
from framefarm.storage.file import FileStorage


def _opened(path, scheme):
    """Note which process opened a backend, beside it (outside the storage folder)."""
    with open(f"{path}.{scheme}-pids", "a") as f:
        f.write(f"{os.getpid()}\\n")


class Dir2Storage(FileStorage):
    """A folder, as file:// is, under another scheme: dir2:///abs/dir."""

    def __init__(self, root):
        super().__init__(root)
        self.url = "dir2://" + str(self.root)
        _opened(self.root, "dir2")

    @classmethod
    def from_url(cls, url):
        return cls(url.removeprefix("dir2://"))

    def __reduce__(self):
        return (Dir2Storage, (self.root,))


class Lite2JobLog(SqliteJobLog):
    """A SQLite job log under another scheme: lite2:///abs/file.db."""

    def __init__(self, path):
        super().__init__(path)
        self.url = "lite2://" + str(self.path)
        _opened(self.path, "lite2")

    @classmethod
    def from_url(cls, url):
        return cls(url.removeprefix("lite2://"))

    def __reduce__(self):
        return (Lite2JobLog, (self.path,))
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """farm_backends, installed as the distribution farm-backends 1.0 under tmp_path/site, for
    subprocesses (the returned environment) and for this process (sys.path)."""
    site = tmp_path / "site"
    info = site / "farm_backends-1.0.dist-info"
    info.mkdir(parents=True)
    (site / "farm_backends.py").write_text(PLUGIN)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: farm-backends\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[framefarm.storage]\ndir2 = farm_backends:Dir2Storage\n\n"
        "[framefarm.joblogs]\nlite2 = farm_backends:Lite2JobLog\n")
    monkeypatch.syspath_prepend(str(site))
    storage._plugins.cache_clear()  # this process may have scanned the installed packages before
    yield {"PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", ""))
                                         if p)}
    storage._plugins.cache_clear()


def test_storage_and_a_job_log_from_another_package_render_a_video(
        workdir: Path, plugin: dict[str, str]) -> None:
    root, db = workdir / "store", workdir / "log.db"
    done = run_cli("render", str(EXAMPLES / "circles.py"), "-o", "out.mp4", "--frames", "12",
                   "--size", "64x48", "--workers", "2", "--run-id", "p1",
                   "--storage", f"dir2://{root}", "--joblog", f"lite2://{db}",
                   cwd=workdir, env=plugin)
    assert done.returncode == 0, done.stderr

    # Read back through the plugin, as any framefarm process would: the video is the sketch's.
    stored = open_storage(f"dir2://{root}")
    assert type(stored).__name__ == "Dir2Storage"
    assert stored.exists("runs/p1/plan.json")
    frames = read_frames(stored.get_file("runs/p1/output.mp4", workdir / "back.mp4"))
    assert len(frames) == 12
    assert (workdir / "out.mp4").read_bytes() == (workdir / "back.mp4").read_bytes()
    source = FrameSource(load_sketch(str(EXAMPLES / "circles.py")), width=64, height=48,
                         fps=Fraction(30), total_frames=12)
    scores = [psnr(frame, source.frame(i)[:, :, :3]) for i, frame in enumerate(frames)]
    assert min(scores) >= 25, scores  # 4:2:0 costs a few dB on 64x48 circles' edges
    # and each frame is its own, in order: closer to its sketch frame than to the next one
    assert all(psnr(frames[i], source.frame(i + 1)[:, :, :3]) < scores[i] for i in range(11))

    log = open_joblog(f"lite2://{db}")
    assert type(log).__name__ == "Lite2JobLog"
    jobs = log.jobs("p1")
    assert jobs[0].job == "plan" and jobs[-1].job == "encode"
    assert all(j.status == "SUCCEEDED" for j in jobs)
    run = log.get_run("p1")
    assert run is not None and run.settings.get(config.STORAGE) == f"dir2://{root}"
    # Worker processes opened them too, from the URLs in the job contract: not only the driver.
    for marker in (f"{root}.dir2-pids", f"{db}.lite2-pids"):
        assert len(set(Path(marker).read_text().split())) >= 2, marker


def test_a_plugin_declares_its_reach_and_runners_hold_it_to_that(plugin: dict[str, str],
                                                                 tmp_path: Path) -> None:
    dir2, lite2 = f"dir2://{tmp_path}/s", f"lite2://{tmp_path}/j.db"
    assert (storage.url_reach(dir2), joblog.url_reach(lite2)) == ("machine", "machine")
    runner_class("local").check_backends(dir2, lite2)  # worker processes share the machine
    with pytest.raises(UserError, match=f"AWS Batch containers cannot reach {dir2} or {lite2}"):
        runner_class("batch").check_backends(dir2, lite2)


def test_unknown_schemes_list_the_plugins_and_without_them_the_built_ins(
        workdir: Path, plugin: dict[str, str]) -> None:
    sketch = str(EXAMPLES / "circles.py")
    other = run_cli("render", sketch, "-o", "x.mp4", "--storage", "dir3://x", cwd=workdir,
                    env=plugin)
    assert other.returncode == 2
    assert other.stderr.strip().splitlines() == [
        "framefarm: unknown storage URL 'dir3://x': use one of file:///path, memory://name, "
        "s3://bucket/prefix, dir2://"]
    other = run_cli("render", sketch, "-o", "x.mp4", "--joblog", "lite3://x", cwd=workdir,
                    env=plugin)
    assert other.returncode == 2
    assert other.stderr.strip().endswith(
        "unknown job log URL 'lite3://x': use one of sqlite:///path, memory://name, "
        "dynamodb://table, lite2://")
    # without the package, its scheme is unknown, and the built-ins are listed
    gone = run_cli("render", sketch, "-o", "x.mp4", "--storage", "dir2://x", cwd=workdir)
    assert gone.returncode == 2
    assert gone.stderr.strip().endswith(
        "unknown storage URL 'dir2://x': use one of file:///path, memory://name, "
        "s3://bucket/prefix")
    assert not (workdir / "framefarm-data").exists() or not list(
        (workdir / "framefarm-data").glob("runs/*"))
