"""Shared fixtures: a clean working folder per test, sketches written on the fly, video checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images, in dB (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh current folder, as a user's project folder would be."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def write_sketch(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a sketch file from source text; returns its path."""

    def write(source: str, name: str = "sketch.py") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(source))
        return path

    return write


def framefarm_command() -> list[str]:
    """The installed `framefarm` command, as a user runs it."""
    exe = shutil.which("framefarm", path=str(Path(sys.executable).parent)) or shutil.which("framefarm")
    assert exe, "the framefarm command is not installed: pip install -e ."
    return [exe]


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run `framefarm ARGS` in `cwd`; returns the finished process with its text output."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("FRAMEFARM_", "JOB_TYPE",
                                                                         "AWS_BATCH_"))}
    full_env.update(env or {})
    return subprocess.run([*framefarm_command(), *args], cwd=cwd, env=full_env, text=True,
                          capture_output=True, timeout=timeout, check=False)
