"""Storage in this process's memory, for tests and single-process runs.

Storage is named by URL, so every `MemoryStorage` of one name in a process shares its objects,
and `open_storage("memory://x")` returns one object each time. Nothing crosses processes.
"""

from __future__ import annotations

import threading

from framefarm.errors import UserError
from framefarm.storage._base import Storage, check_key


class _Shelf:
    """The objects of one named memory storage, and the lock that makes each change atomic."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.lock = threading.Lock()


_shelves: dict[str, _Shelf] = {}
_opened: dict[str, MemoryStorage] = {}
_registry_lock = threading.RLock()  # __init__ takes it too


class MemoryStorage(Storage):
    """Objects in a dict shared by name within the process.

    `memory://name/some/prefix` is a view of storage `name` under `some/prefix/`, as a
    subfolder is for `file://` and a prefix is for `s3://`.
    """

    reach = "process"  # a dict of this process: worker processes cannot share it

    def __init__(self, name: str = "") -> None:
        shelf_name, _, sub = name.partition("/")
        if sub:
            try:
                check_key(sub)
            except UserError:
                raise UserError(f"bad storage URL 'memory://{name}': use memory://name or "
                                "memory://name/prefix") from None
        self.name = name
        self.url = f"memory://{name}"
        self._prefix = sub + "/" if sub else ""
        with _registry_lock:
            self._shelf = _shelves.setdefault(shelf_name, _Shelf())

    @classmethod
    def open(cls, name: str = "") -> MemoryStorage:
        """The process's one MemoryStorage called `name`."""
        with _registry_lock:
            if name not in _opened:
                _opened[name] = cls(name)
            return _opened[name]

    @classmethod
    def from_url(cls, url: str) -> MemoryStorage:
        """`memory://name` or `memory://name/prefix`."""
        return cls.open(url.removeprefix("memory://").rstrip("/"))

    def clear(self) -> None:
        """Remove every object in this storage (under its prefix)."""
        with self._shelf.lock:
            for key in [k for k in self._shelf.objects if k.startswith(self._prefix)]:
                del self._shelf.objects[key]

    def __repr__(self) -> str:
        return f"MemoryStorage({self.name!r})"

    def __reduce__(self) -> tuple[object, ...]:
        return (MemoryStorage, (self.name,))

    # -- primitives ---------------------------------------------------------------------------

    def _put_bytes(self, key: str, data: bytes) -> None:
        with self._shelf.lock:
            self._shelf.objects[self._prefix + key] = data

    def _get_bytes(self, key: str) -> bytes:
        with self._shelf.lock:
            data = self._shelf.objects.get(self._prefix + key)
        if data is None:
            raise self._missing(key)
        return data

    def _exists(self, key: str) -> bool:
        with self._shelf.lock:
            return self._prefix + key in self._shelf.objects

    def _list(self, prefix: str) -> list[str]:
        start = self._prefix + prefix
        with self._shelf.lock:
            return [k[len(self._prefix):] for k in self._shelf.objects if k.startswith(start)]

    def _delete(self, key: str) -> None:
        with self._shelf.lock:
            self._shelf.objects.pop(self._prefix + key, None)
