"""Where frames, segments, plans, sketches and videos live; a backend is chosen by URL.

`open_storage("file:///data")`, `open_storage("memory://test")`, or a bare local path.

One registry shape for storage, job logs and runners (as fsspec's `known_implementations`):
each built-in URL scheme is one line of `_BUILT_IN` naming its class, imported only when used
(so a cloud SDK is needed only for its scheme); another package adds a scheme through the
`framefarm.storage` entry-point group (`[project.entry-points."framefarm.storage"]
NAME = "pkg.module:StorageClass"`), read only for a scheme that is no built-in's. A backend
class has `from_url(url)` and declares who can reach it (`Storage.reach`).
"""

from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass
from typing import Any

from framefarm._locations import is_url, split_url
from framefarm.errors import MissingExtraError, UserError
from framefarm.storage._base import PROBE_PREFIX, REACHES, Storage, StorageIOError, check_key

__all__ = ["BACKENDS", "ENTRY_POINT_GROUP", "PROBE_PREFIX", "REACHES", "Backend", "Registry",
           "Storage", "StorageIOError", "check_key", "default_scheme", "is_url", "open_storage",
           "reaches", "split_url", "url_reach"]

ENTRY_POINT_GROUP = "framefarm.storage"


@dataclass(frozen=True)
class Backend:
    """What is known of a URL scheme's backend before it is imported: where its class lives,
    the pip extra its SDK comes from, and an example URL for messages."""

    module: str
    cls: str
    extra: str | None
    example: str

    @classmethod
    def of(cls, path: str, example: str, *, extra: str | None = None) -> Backend:
        """The backend whose class is at `path`, "module:Class"."""
        module, _, attribute = path.partition(":")
        return cls(module, attribute, extra, example)


_BUILT_IN: dict[str, Backend] = {
    "file": Backend.of("framefarm.storage.file:FileStorage", "file:///path"),
    "memory": Backend.of("framefarm.storage.memory:MemoryStorage", "memory://name"),
    "s3": Backend.of("framefarm.storage.s3:S3Storage", "s3://bucket/prefix", extra="aws"),
}
"""Each built-in scheme's backend class, as "module:Class"; a new one is one line here."""

BACKENDS = _BUILT_IN
"""The built-in schemes (a name kept for callers that read or extend the table)."""

_SCHEME_WITHOUT_SLASHES = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):(?!//)")


@functools.cache
def _plugins(group: str) -> dict[str, str]:
    """Scheme -> "module:Class" of the backends other installed packages register in `group`;
    read only for a scheme that is no built-in's: scanning the installed packages costs ~30 ms."""
    from importlib.metadata import entry_points

    return {point.name.lower(): point.value for point in entry_points(group=group)}


class Registry:
    """The backends of one kind (storage, job logs), by URL scheme: the built-ins, then those of
    the entry-point group `group`; a bare path means the scheme `bare`.

    `what` names the kind in messages ("storage", "job log"); a loaded class must subclass
    `base`.
    """

    def __init__(self, what: str, *, built_in: dict[str, Backend], group: str, bare: str,
                 base: type) -> None:
        self.what = what
        self.built_in = built_in
        self.group = group
        self.bare = bare
        self.base = base

    def find(self, scheme: str) -> Backend | None:
        """The backend of `scheme` (a built-in's first), or None."""
        if not scheme:
            return None
        found = self.built_in.get(scheme)
        if found is None and scheme in (plugins := _plugins(self.group)):
            found = Backend.of(plugins[scheme], f"{scheme}://")
        return found

    def known(self) -> list[str]:
        """An example URL of each scheme: the built-ins, then other packages' schemes."""
        return [*(b.example for b in self.built_in.values()),
                *(f"{s}://" for s in _plugins(self.group) if s not in self.built_in)]

    def backend_class(self, url: str) -> Any:
        """The class of the backend `url` names, imported now; a UserError naming `url` for an
        unknown scheme (listing the known ones) or a missing extra (the pip line)."""
        scheme = default_scheme(url, self.bare)
        backend = self.find(scheme)
        if backend is None:
            adjective = "unknown" if scheme else "bad"
            raise UserError(f"{adjective} {self.what} URL {url!r}: use one of "
                            f"{', '.join(self.known())}")
        try:
            module = importlib.import_module(backend.module)
        except ImportError as e:
            # Only a missing third-party package is the user's to fix; our own import bugs and a
            # plugin's are not.
            if backend.extra is None or (e.name or "").startswith("framefarm"):
                raise
            raise MissingExtraError(f"{self.what} URL {url!r}", backend.extra) from e
        cls = getattr(module, backend.cls)
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise TypeError(f"{backend.module}:{backend.cls}, the {self.what} backend of "
                            f"{scheme}://, is no {self.base.__name__} subclass")
        return cls

    def reach(self, url: str) -> str:
        """Who can use the backend `url` names (REACHES), as its class declares."""
        found: str = self.backend_class(url).reach
        return found


_REGISTRY = Registry("storage", built_in=_BUILT_IN, group=ENTRY_POINT_GROUP, bare="file",
                     base=Storage)


def url_reach(url: str) -> str:
    """Who can use the storage at `url` (REACHES)."""
    return _REGISTRY.reach(url)


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
    """The storage at `url`: file:///abs/dir, file://relative/dir, a bare path, memory://name,
    s3://bucket/prefix, or a scheme another package registers."""
    if not url:
        raise UserError("no storage URL given: use file:///path or a folder")
    storage: Storage = _REGISTRY.backend_class(url).from_url(url)
    return storage
