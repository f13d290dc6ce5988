"""What `pip install framefarm` ships: every package under src/, and the examples as a package."""

from __future__ import annotations

import tomllib
from pathlib import Path

from framefarm.sketch import load_sketch

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_under_src_is_listed() -> None:
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(ROOT / "src").parts)
             for p in (ROOT / "src").rglob("__init__.py")}
    assert found, "no packages found under src/"
    assert set(settings["packages"]) == found | {"framefarm.examples"}
    assert settings["package-dir"]["framefarm.examples"] == "examples"


def test_examples_load_as_installed_modules() -> None:
    for name in ("plasma", "circles", "wave_plot"):
        by_module = load_sketch(f"framefarm.examples.{name}:render")
        by_path = load_sketch(str(ROOT / "examples" / f"{name}.py"))
        assert by_module.defaults == by_path.defaults
        assert Path(by_module.module.__file__ or "").resolve() == ROOT / "examples" / f"{name}.py"
