"""The container images as tests see them: the Dockerfile's stages parsed, and an image's
entrypoint run exactly as the image would run it (same command, same environment), since no
Docker engine runs here."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import ROOT

DOCKERFILE = ROOT / "deploy" / "Dockerfile"


@dataclass
class Stage:
    """What one build stage sets, after inheriting from its parent stage."""

    name: str
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    user: str = ""
    workdir: str = ""


def parse_dockerfile(text: str) -> tuple[dict[str, str], dict[str, Stage]]:
    """Global ARG defaults, and every stage with ENV, ENTRYPOINT, USER and WORKDIR resolved."""
    lines = re.sub(r"\\\n", " ", text).splitlines()
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "ARG" and current is None and "=" in rest:
            name, _, value = rest.partition("=")
            args[name.strip()] = value.strip()
        elif word == "FROM":
            parent, _, name = rest.partition(" AS ")
            base = stages.get(parent.strip())
            current = Stage(name.strip())
            if base is not None:
                current.env = dict(base.env)
                current.entrypoint = list(base.entrypoint)
                current.user, current.workdir = base.user, base.workdir
            stages[current.name] = current
        elif current is not None and word == "ENV":
            for pair in re.findall(r"(\w+)=(\S+)", rest):
                current.env[pair[0]] = pair[1]
        elif current is not None and word == "ENTRYPOINT":
            current.entrypoint = json.loads(rest)
        elif current is not None and word == "USER":
            current.user = rest.strip()
        elif current is not None and word == "WORKDIR":
            current.workdir = rest.strip()
    return args, stages


def run_as_image(stage: Stage, overrides: Mapping[str, str], workdir: Path, *,
                 command: Sequence[str] = (), timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the image's ENTRYPOINT (plus `command`, as Docker appends CMD) with the image's ENV
    plus `overrides`, in `workdir` (standing in for the image's WORKDIR)."""
    env = {k: v for k, v in os.environ.items()
           if k in ("PATH", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH")}
    env.update(stage.env)
    env["HOME"] = str(workdir)  # the image's HOME exists; here a writable stand-in
    env.update(overrides)
    exe = shutil.which(stage.entrypoint[0], path=str(Path(sys.executable).parent)) or stage.entrypoint[0]
    return subprocess.run([exe, *stage.entrypoint[1:], *command], env=env, cwd=workdir, text=True,
                          capture_output=True, timeout=timeout, check=False)


def image_stages() -> dict[str, Stage]:
    """The stages of deploy/Dockerfile by name."""
    return parse_dockerfile(DOCKERFILE.read_text())[1]
