"""framefarm._aws: how boto3 clients are configured and shared. No call leaves the process."""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from framefarm import _aws
from framefarm.errors import MissingExtraError, UserError


@pytest.fixture(autouse=True)
def aws_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[None]:
    """A machine with credentials and no AWS configuration files; no region unless a test sets one."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    _aws.reset()
    yield
    _aws.reset()


def test_aws_region_alone_is_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    # boto3 reads only AWS_DEFAULT_REGION; AWS_REGION is what the other SDKs and ECS use.
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert _aws.client("s3").meta.region_name == "eu-west-1"


def test_aws_region_beats_aws_default_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    assert _aws.client("dynamodb").meta.region_name == "eu-west-1"


def test_aws_default_region_and_profile_region(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    assert _aws.client("s3").meta.region_name == "us-west-2"
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    (tmp_path / "config").write_text("[profile render]\nregion = ap-south-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "render")
    _aws.reset()
    assert _aws.client("s3").meta.region_name == "ap-south-1"


def test_no_region_is_one_line_naming_aws_region() -> None:
    with pytest.raises(UserError) as caught:
        _aws.client("batch")
    message = str(caught.value)
    assert "set AWS_REGION" in message and "batch" in message and "\n" not in message
    assert caught.value.exit_code == 2


def test_overrides_beat_the_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    other = _aws.client("s3", region_name="us-east-2")
    assert other.meta.region_name == "us-east-2"
    assert _aws.client("s3").meta.region_name == "eu-west-1"
    assert _aws.client("s3", region_name="us-east-2") is other


def test_endpoint_url_is_honoured_by_boto3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")
    assert _aws.client("dynamodb").meta.endpoint_url == "http://127.0.0.1:4566"
    assert _aws.client("s3").meta.endpoint_url == "http://127.0.0.1:9000"


def test_retries_back_off_adaptively(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    retries = _aws.client("batch").meta.config.retries
    assert retries["mode"] == "adaptive"
    assert retries["total_max_attempts"] == _aws.MAX_ATTEMPTS == 10  # the first one included


def test_one_client_per_service_and_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    s3 = _aws.client("s3")
    assert _aws.client("s3") is s3
    assert _aws.client("dynamodb") is not s3
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    context: Any = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_same_client_in_child, args=(s3, results))
    child.start()
    shared = results.get(timeout=30)
    child.join(timeout=30)
    assert shared is False  # a forked worker makes its own client, with its own connections


def _same_client_in_child(parent: Any, results: Any) -> None:
    results.put(_aws.client("s3") is parent)


def test_missing_boto3_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # `import boto3` now raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'framefarm\[aws\]'"):
        _aws.client("s3")


def test_error_code() -> None:
    from botocore.exceptions import ClientError

    error = ClientError({"Error": {"Code": "NoSuchKey", "Message": "gone"}}, "GetObject")
    assert _aws.error_code(error) == "NoSuchKey"
    assert _aws.error_code(ValueError("x")) == ""


def test_a_download_out_of_retries_reports_its_last_error() -> None:
    """s3transfer keeps the last error of a download that ran out of retries: a missing key is
    still a missing key, not an internal fault."""
    from botocore.exceptions import ClientError
    from s3transfer.exceptions import RetriesExceededError

    from framefarm.errors import StorageKeyError
    from framefarm.storage.s3 import S3Storage

    missing = ClientError({"Error": {"Code": "NoSuchKey", "Message": "gone"}}, "GetObject")
    with pytest.raises(StorageKeyError, match=r"runs/r/plan\.json"):
        S3Storage("bucket", "prefix")._fail("runs/r/plan.json", RetriesExceededError(missing))
