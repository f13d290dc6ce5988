"""The storage and job-log registries: importing them stays light, each backend class declares
who can reach it, and a backend that declares nonsense is refused where it is defined."""

from __future__ import annotations

import subprocess
import sys

import pytest

from framefarm import joblog, storage
from framefarm.errors import UserError
from framefarm.joblog import JobLog
from framefarm.storage import Backend, Registry, Storage


def test_importing_the_registries_pulls_no_cloud_sdk_and_no_package_scan() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import sys, framefarm.storage, framefarm.joblog; print(sorted("
         "m for m in ('boto3', 'botocore', 'importlib.metadata', 'framefarm.storage.s3', "
         "'framefarm.joblog.dynamodb', 'framefarm.joblog.sqlite') if m in sys.modules))"],
        capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(("registry", "schemes"), [
    (storage._REGISTRY, {"file": "machine", "memory": "process", "s3": "anywhere"}),
    (joblog._REGISTRY, {"sqlite": "machine", "memory": "process", "dynamodb": "anywhere"}),
])
def test_each_built_in_class_declares_its_reach(registry: Registry,
                                                schemes: dict[str, str]) -> None:
    assert list(registry.built_in) == list(schemes)
    for scheme, reach in schemes.items():
        assert registry.backend_class(f"{scheme}://x").reach == reach


def test_a_backend_declaring_an_unknown_reach_is_refused_where_it_is_defined() -> None:
    with pytest.raises(TypeError, match="declares reach 'galaxy': use one of process, machine"):
        class Far(Storage):
            reach = "galaxy"
    with pytest.raises(TypeError, match="declares reach None"):
        class Vague(JobLog):
            reach = None  # type: ignore[assignment]


def test_a_scheme_whose_class_is_not_a_backend_is_an_internal_fault(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(storage.BACKENDS, "odd", Backend.of("framefarm.joblog.memory:MemoryJobLog",
                                                            "odd://x"))
    with pytest.raises(TypeError, match="the storage backend of odd://, is no Storage subclass"):
        storage.open_storage("odd://x")


def test_an_unknown_scheme_cannot_say_who_reaches_it() -> None:
    with pytest.raises(UserError, match="unknown storage URL 'ftp://x': use one of file:///path"):
        storage.url_reach("ftp://x")
    with pytest.raises(UserError, match="unknown job log URL 'pg://x': use one of sqlite:///path"):
        joblog.url_reach("pg://x")
