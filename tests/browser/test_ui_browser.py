"""`framefarm ui` in a real browser: Debian's Chromium driven by Playwright, against the real
command serving a real project folder while real renders run. The runs page shows a render,
its page fills its chunk grid in live (no reload), shows the preview then plays the finished
video (seeking through byte ranges), and Cancel stops a second run. Screenshots are kept in
the test's folder (and copied to $FRAMEFARM_UI_SCREENSHOTS when set: the README's come so)."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import framefarm_command

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium: apt-get install -y "
                       "--no-install-recommends chromium (.ci/run does)"),
]
playwright_api = pytest.importorskip("playwright.sync_api",
                                     reason="playwright is not installed: pip install -e '.[dev]'")

FPS = 24
SKETCH = f"""
import os, time
import numpy as np

WIDTH, HEIGHT, FPS = 256, 144, {FPS}

def render(ctx):
    time.sleep(float(os.environ.get("SLOW", "0")))
    y, x = np.mgrid[0:ctx.height, 0:ctx.width] / 24.0
    t = ctx.frame / 12.0
    v = np.sin(x + t) + np.sin(y * 1.3 - t) + np.sin((x + y) * 0.7 + t * 0.5)
    return np.dstack([128 + 120 * np.sin(v), 128 + 120 * np.sin(v + 2.1),
                      128 + 120 * np.sin(v + 4.2)]).astype(np.uint8)
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRAMEFARM_", "OTEL_"))}
    return {**env, **extra}


def _stop(process: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    """Stop a process this test started, by its pid; killed if it will not go."""
    if process.poll() is None:
        os.kill(process.pid, sig)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("browser-farm")
    (folder / "sketch.py").write_text(SKETCH)
    return folder


@pytest.fixture(scope="module")
def ui(project: Path) -> Iterator[str]:
    """`framefarm ui` started as a user starts it, on a free port; its URL."""
    process = subprocess.Popen([*framefarm_command(), "ui", "--port", "0"], cwd=project, env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    try:
        said = b""
        deadline = time.monotonic() + 30
        assert process.stdout is not None
        while b"token" not in said:
            assert time.monotonic() < deadline and process.poll() is None, (said, process.poll())
            ready, _, _ = select.select([process.stdout], [], [], 1)
            if ready:
                said += os.read(process.stdout.fileno(), 4096)
        lines = said.decode().splitlines()
        found = re.search(r"(http://127\.0\.0\.1:\d+/)", lines[0])
        assert found, lines
        assert re.search(r"token \S{20,}", lines[1]), lines
        yield found.group(1)
    finally:
        _stop(process, signal.SIGINT)  # Ctrl-C, as a user stops it
    said = process.stderr.read().decode() if process.stderr else ""
    assert process.returncode == 0 and "Traceback" not in said, said
    assert "framefarm ui: stopped" in said


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def shots(tmp_path: Path) -> Iterator[Any]:
    folder = tmp_path / "artefacts"
    folder.mkdir()
    kept = os.environ.get("FRAMEFARM_UI_SCREENSHOTS", "")

    def shot(page: Any, name: str, **options: Any) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), **options)
        if kept:
            Path(kept).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(kept) / path.name)
        return path

    yield shot
    print(f"screenshots: {folder}")


def render(project: Path, run_id: str, *, frames: int, slow: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*framefarm_command(), "render", "sketch.py", "-o", f"{run_id}.mp4", "--frames", str(frames),
         "--per-job", "10", "--run-id", run_id, "--workers", "2"],
        cwd=project, env=_env(SLOW=str(slow)), text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True)


def test_watch_a_run_render_live_then_play_its_video(ui: str, project: Path, browser: Any,
                                                     shots: Any) -> None:
    frames = 240  # 24 chunks, ~10 s on 2 workers
    process = render(project, "watched", frames=frames, slow=0.08)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(ui)
        row = page.locator('tr[data-run="watched"]')
        row.wait_for(timeout=20_000)  # the list refreshes itself: the run appears
        page.wait_for_selector('tr[data-run="watched"][data-status="RUNNING"]', timeout=20_000)
        shots(page, "runs-while-rendering")
        row.locator("a").click()
        page.wait_for_url(f"{ui}runs/watched")
        page.evaluate("window.notReloaded = true")
        page.wait_for_function("document.querySelectorAll('#grid i').length === 24", timeout=20_000)

        def done_cells() -> int:
            return int(page.evaluate("document.querySelectorAll('#grid i.s').length"))

        first = done_cells()
        page.wait_for_function(f"document.querySelectorAll('#grid i.s').length > {first}",
                               timeout=20_000)
        middle = done_cells()
        assert 0 < middle < 24, middle  # filling in, not all at once
        page.wait_for_selector("#preview", timeout=20_000)
        page.wait_for_function("document.getElementById('preview').naturalWidth === 256",
                               timeout=20_000)
        assert page.locator("#fps").inner_text() != "\N{EN DASH}"  # a rate, not the blank
        shots(page, "run-while-rendering")

        page.wait_for_selector('#status[data-status="SUCCEEDED"]', timeout=60_000)
        assert done_cells() == 24
        assert page.evaluate("window.notReloaded") is True  # it came over the event stream
        video = page.locator("#video")
        video.wait_for(timeout=20_000)
        page.wait_for_function("document.getElementById('video').readyState >= 2", timeout=20_000)
        duration = page.evaluate("document.getElementById('video').duration")
        assert abs(duration - frames / FPS) < 0.2, duration
        # Seek to the middle (a byte-range request) and play from there.
        page.evaluate("""() => new Promise((resolve) => {
            const v = document.getElementById('video');
            v.muted = true;
            v.addEventListener('seeked', () => resolve(), {once: true});
            v.currentTime = 5;
        })""")
        page.evaluate("document.getElementById('video').play()")
        page.wait_for_function("document.getElementById('video').currentTime > 5.3", timeout=20_000)
        state = page.evaluate("""(() => { const v = document.getElementById('video');
            return {readyState: v.readyState, error: v.error && v.error.code,
                    width: v.videoWidth, height: v.videoHeight}; })()""")
        assert state == {"readyState": state["readyState"], "error": None, "width": 256, "height": 144}
        assert state["readyState"] >= 2
        page.evaluate("document.getElementById('video').pause()")
        page.locator("#waterfall .row").first.wait_for(timeout=20_000)
        assert page.locator("#waterfall .row").count() == 26  # plan, 24 renders, encode
        shots(page, "run-succeeded", full_page=True)

        page.locator('#grid i[data-i="3"]').click()
        page.wait_for_selector("#chunk-panel h2", timeout=10_000)
        assert "frames 30\N{EN DASH}39" in page.locator("#chunk-panel h2").inner_text()
        page.goto(f"{ui}runs/watched/chunks/3")
        page.wait_for_selector("#slowest tbody tr", timeout=10_000)
        assert page.locator("#slowest tbody tr").count() == 10
        assert "matches its record" in page.locator("#segment").inner_text()
        assert errors == []
        page.close()
    finally:
        _stop(process)
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""


def test_cancel_a_running_run_from_its_page(ui: str, project: Path, browser: Any,
                                            shots: Any) -> None:
    process = render(project, "stopped", frames=400, slow=0.08)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{ui}runs/stopped")
        page.wait_for_selector('#status[data-status="RUNNING"]', timeout=30_000)
        page.wait_for_function("document.querySelectorAll('#grid i.s').length >= 1", timeout=30_000)
        page.on("dialog", lambda dialog: dialog.accept())  # "Cancel run stopped?"
        page.locator("#cancel").click()
        page.wait_for_selector('#status[data-status="CANCELLED"]', timeout=30_000)
        assert "CANCELLED" in page.locator("#note").inner_text()
        assert page.locator("#cancel").is_disabled() and page.locator("#resume").is_enabled()
        assert process.wait(timeout=30) == 130  # the render command was stopped, as by `cancel`
        shots(page, "run-cancelled", full_page=True)
        page.goto(ui)
        page.wait_for_selector('tr[data-run="stopped"][data-status="CANCELLED"]', timeout=10_000)
        shots(page, "runs")
        page.select_option("#status-filter", "CANCELLED")
        page.wait_for_function("document.querySelectorAll('#runs tbody tr').length === 1", timeout=10_000)
        page.close()
    finally:
        _stop(process)
