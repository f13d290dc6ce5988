"""boto3 clients for the AWS backends and the Batch runner: the only place framefarm makes one.

Clients follow the standard AWS configuration (AWS_REGION / AWS_DEFAULT_REGION, the credentials
chain, AWS_ENDPOINT_URL and its per-service forms), so nothing is special-cased for tests or for
other AWS-compatible endpoints. boto3 itself reads only AWS_DEFAULT_REGION and the profile's
region; AWS_REGION, which the other AWS SDKs read first and ECS sets in every container, is
read here and wins over both. Retries use botocore's adaptive mode: exponential backoff with
jitter plus client-side rate limiting, so a throttled call (SubmitJob allows 50 a second) slows
down instead of failing.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from framefarm.errors import MissingExtraError, UserError

MAX_ATTEMPTS = 10
"""Attempts per call, the first included (botocore's default is 3)."""

_clients: dict[tuple[int, str, tuple[tuple[str, str], ...]], Any] = {}
_lock = threading.Lock()


def client(service: str, **overrides: str) -> Any:
    """A client for `service`, shared by the threads of one process (boto3 clients are thread
    safe) and made anew in a forked child (connections must not be shared across processes).

    `overrides` go to boto3's `client()` (`region_name="eu-west-1"`, `endpoint_url=…`) and beat
    the configuration; each combination gets its own client.
    """
    key = (os.getpid(), service, tuple(sorted(overrides.items())))
    found = _clients.get(key)
    if found is not None:
        return found
    with _lock:
        found = _clients.get(key)
        if found is None:
            found = _clients[key] = _make(service, overrides)
    return found


def reset() -> None:
    """Forget every client, so the next ones read the configuration again."""
    with _lock:
        _clients.clear()


def _make(service: str, overrides: dict[str, str]) -> Any:
    from framefarm import _otel

    _otel.instrument_botocore()  # AWS calls become spans of the run's trace
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise MissingExtraError(f"AWS ({service})", "aws") from None
    session = boto3.session.Session()
    # AWS_REGION first, then boto3's own region (AWS_DEFAULT_REGION, the profile's).
    kwargs: dict[str, Any] = {"region_name": os.environ.get("AWS_REGION") or session.region_name,
                              **overrides}
    if not kwargs["region_name"]:
        raise UserError(f"no AWS region is configured for {service}: set AWS_REGION "
                        "(e.g. AWS_REGION=us-east-1) or a region in ~/.aws/config")
    # botocore's `max_attempts` counts retries only; `total_max_attempts` counts the first too.
    config = Config(retries={"mode": "adaptive", "total_max_attempts": MAX_ATTEMPTS},
                    user_agent_extra="framefarm")
    return session.client(service, config=config, **kwargs)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('NoSuchKey', '404' …), else ''."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))
