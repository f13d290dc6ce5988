"""boto3 clients for the AWS backends and the Batch runner: the only place framefarm makes one.

Clients follow the standard AWS configuration (AWS_REGION / AWS_DEFAULT_REGION, the credentials
chain, AWS_ENDPOINT_URL and its per-service forms), so nothing is special-cased for tests or for
other AWS-compatible endpoints. Retries use botocore's adaptive mode: exponential backoff with
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

_clients: dict[tuple[int, str], Any] = {}
_lock = threading.Lock()


def client(service: str) -> Any:
    """A client for `service`, shared by the threads of one process (boto3 clients are thread
    safe) and made anew in a forked child (connections must not be shared across processes)."""
    key = (os.getpid(), service)
    found = _clients.get(key)
    if found is not None:
        return found
    with _lock:
        found = _clients.get(key)
        if found is None:
            found = _clients[key] = _make(service)
    return found


def reset() -> None:
    """Forget every client, so the next ones read the configuration again."""
    with _lock:
        _clients.clear()


def _make(service: str) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise MissingExtraError(f"AWS ({service})", "aws") from None
    session = boto3.session.Session()
    if not session.region_name:
        raise UserError(f"no AWS region is configured for {service}: set AWS_REGION "
                        "(e.g. AWS_REGION=us-east-1) or a region in ~/.aws/config")
    config = Config(retries={"mode": "adaptive", "max_attempts": MAX_ATTEMPTS},
                    user_agent_extra="framefarm")
    return session.client(service, config=config)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('NoSuchKey', '404' …), else ''."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))
