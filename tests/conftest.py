"""Shared fixtures: a clean working folder per test, sketches written on the fly, video checks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
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
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("FRAMEFARM_", "JOB_TYPE", "AWS_BATCH_", "OTEL_", "TRACEPARENT",
                                     "_X_AMZN_TRACE_ID"))}
    full_env.update(env or {})
    return subprocess.run([*framefarm_command(), *args], cwd=cwd, env=full_env, text=True,
                          capture_output=True, timeout=timeout, check=False)


def render_and_encode(base: dict[str, str], run_id: str, indexes: Sequence[int], *,
                      cwd: Path) -> None:
    """A planned run's render jobs in the order given, then its encode job, each its own
    `framefarm job` process with `base` (storage, job log) as AWS Batch would run them."""
    for index in indexes:
        render = run_cli("job", cwd=cwd, env={**base, "JOB_TYPE": "render",
                                              "FRAMEFARM_RUN_ID": run_id,
                                              "AWS_BATCH_JOB_ARRAY_INDEX": str(index)})
        assert render.returncode == 0, render.stderr
    encode = run_cli("job", cwd=cwd, env={**base, "JOB_TYPE": "encode", "FRAMEFARM_RUN_ID": run_id})
    assert encode.returncode == 0, encode.stderr


# -- AWS, played by a moto server on 127.0.0.1 ------------------------------------------------------

@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto server on 127.0.0.1 for the whole session (Batch without Docker); its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server._server.server_address[:2]  # the port the OS chose
    url = f"http://{host}:{port}"
    request = urllib.request.Request(f"{url}/moto-api/config", method="POST",
                                     data=json.dumps({"batch": {"use_docker": False}}).encode(),
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).read()
    yield url
    server.stop()


AWS_MACHINE = {"AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
"""What a machine on AWS has (a region, credentials), less where AWS is."""


@pytest.fixture
def aws_env(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The standard AWS configuration pointing at the moto server, in this process's environment
    (and so in every subprocess a test starts); returns the variables."""
    from framefarm import _aws

    env = {**AWS_MACHINE, "AWS_ENDPOINT_URL": moto_server}
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    _aws.reset()
    yield env
    _aws.reset()


def unique_name(prefix: str) -> str:
    """A fresh AWS resource name (lower case, so valid for buckets too)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def bucket(aws_env: dict[str, str]) -> str:
    """A new, empty S3 bucket on the moto server; its name."""
    import boto3

    name = unique_name("ff-bucket")
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def joblog_table(aws_env: dict[str, str]) -> str:
    """A new DynamoDB job-log table made from deploy/cloudformation.yaml's own definition."""
    from tests.cfn import create_table_from_template

    return create_table_from_template(unique_name("ff-joblog"))
