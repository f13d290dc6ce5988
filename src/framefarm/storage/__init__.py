"""Where frames, segments, plans, sketches and videos live; a backend is chosen by URL.

`open_storage("file:///data")`, `open_storage("memory://test")`, or a bare local path. Each URL
scheme maps to a class imported only when used, so a cloud SDK is needed only for its scheme.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any

from framefarm._locations import is_url, split_url
from framefarm.errors import MissingExtraError, UserError
from framefarm.storage._base import PROBE_PREFIX, Storage, StorageIOError, check_key

__all__ = ["BACKENDS", "PROBE_PREFIX", "REACHES", "Backend", "Storage", "StorageIOError",
           "check_key", "default_scheme", "is_url", "load_backend", "open_storage", "reach",
           "reaches", "split_url", "url_reach"]

REACHES = ("process", "machine", "anywhere")
"""Who can use a backend, narrowest first: this process only (memory://), the processes of this
machine (file://, sqlite:///), or any machine (s3://, dynamodb://)."""


@dataclass(frozen=True)
class Backend:
    """Where a URL scheme's class lives, the pip extra it needs, and an example URL."""

    module: str
    cls: str
    extra: str | None
    example: str
    reach: str = "machine"
    """Who can use it (REACHES): a runner whose jobs run elsewhere needs a wider reach."""


BACKENDS: dict[str, Backend] = {
    "file": Backend("framefarm.storage.file", "FileStorage", None, "file:///path"),
    "memory": Backend("framefarm.storage.memory", "MemoryStorage", None, "memory://name",
                      "process"),
    "s3": Backend("framefarm.storage.s3", "S3Storage", "aws", "s3://bucket/prefix", "anywhere"),
    # A new backend is one line here plus a module whose class has `from_url(url)`.
}

_SCHEME_WITHOUT_SLASHES = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):(?!//)")


def load_backend(backends: dict[str, Backend], scheme: str, *, url: str, what: str) -> Any:
    """The class for `scheme` in `backends`, imported now; a UserError naming `url` otherwise.

    `what` names the thing in messages ("storage", "job log").
    """
    backend = backends.get(scheme) if scheme else None
    if backend is None:
        known = ", ".join(b.example for b in backends.values())
        adjective = "unknown" if scheme else "bad"
        raise UserError(f"{adjective} {what} URL {url!r}: use one of {known}")
    try:
        module = importlib.import_module(backend.module)
    except ImportError as e:
        # Only a missing third-party package is the user's to fix; our own import bugs are not.
        if backend.extra is None or (e.name or "").startswith("framefarm"):
            raise
        raise MissingExtraError(f"{what} URL {url!r}", backend.extra) from e
    return getattr(module, backend.cls)


def reach(backends: dict[str, Backend], url: str, *, default: str) -> str:
    """Who can use the backend `url` names (REACHES); `default`: the scheme of a bare path."""
    backend = backends.get(default_scheme(url, default))
    return backend.reach if backend is not None else "machine"


def url_reach(url: str) -> str:
    """Who can use the storage at `url` (REACHES)."""
    return reach(BACKENDS, url, default="file")


def reaches(found: str, needed: str) -> bool:
    """True when a backend of reach `found` serves a runner that needs reach `needed`."""
    return REACHES.index(found) >= REACHES.index(needed)


def default_scheme(url: str, scheme: str) -> str:
    """`url`'s scheme, or `scheme` when `url` is a bare path ('s3:bucket' is no bare path)."""
    found, _ = split_url(url)
    if found or _SCHEME_WITHOUT_SLASHES.match(url):
        return found
    return scheme


def open_storage(url: str) -> Storage:
    """The storage at `url`: file:///abs/dir, file://relative/dir, a bare path, memory://name."""
    if not url:
        raise UserError("no storage URL given: use file:///path or a folder")
    scheme = default_scheme(url, "file")
    storage: Storage = load_backend(BACKENDS, scheme, url=url, what="storage").from_url(url)
    return storage
