"""The layers of DESIGN.md, held by import-linter's contracts in pyproject.toml: steps import no
runner and no cloud SDK, runners no pixels code, the job wrapper no runner, nothing the CLI,
tracing no storage."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lint_imports(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is not installed: pip install -e '.[dev]'"
    return subprocess.run([exe, "--no-cache", *args], cwd=cwd, text=True, capture_output=True,
                          timeout=120, check=False)


def test_every_layer_contract_is_kept() -> None:
    done = lint_imports("--config", str(ROOT / "pyproject.toml"), cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 8 kept, 0 broken." in done.stdout


def test_a_broken_layer_fails_and_names_the_import(tmp_path: Path) -> None:
    """The same linter on a contract the code breaks (the job wrapper does import the steps):
    it must see the import and fail, or the contracts above prove nothing."""
    config = tmp_path / "layers.toml"
    config.write_text('[tool.importlinter]\nroot_package = "framefarm"\n\n'
                      '[[tool.importlinter.contracts]]\nname = "job imports no step"\n'
                      'type = "forbidden"\nsource_modules = ["framefarm.job"]\n'
                      'forbidden_modules = ["framefarm.steps"]\n')
    done = lint_imports("--config", str(config), cwd=tmp_path)
    assert done.returncode != 0
    assert "job imports no step BROKEN" in done.stdout
    assert "framefarm.job -> framefarm.steps" in done.stdout
