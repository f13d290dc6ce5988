"""The Storage interface: the base class validates keys and owns the shared behaviour; a backend
implements only the `_primitives`.

Failures: a key that is not there is a StorageKeyError; storage that cannot be used at all (a
folder that cannot be created, a bucket that does not exist) is a UserError; an I/O fault while
a run goes on (a full disk, a refused or throttled request, a lost connection) is a
StorageIOError, a TransientError (exit 1) a retry may fix. `probe()`, called before a run
starts, turns the faults a retry cannot fix (read-only, no permission, full) into UserErrors.
"""

from __future__ import annotations

import builtins
import os
import secrets
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, ClassVar

from framefarm.errors import StorageKeyError, TransientError, UserError
from framefarm.tracing import traced

PROBE_PREFIX = ".framefarm-probe-"
"""Names of the objects `probe()` writes and deletes (hidden: FileStorage lists skip them)."""
_PROBE_DATA = b"framefarm storage probe\n" * 171  # 4 KB: a full disk refuses it, unlike b""

REACHES = ("process", "machine", "anywhere")
"""Who can use a backend, narrowest first: this process only (memory://), the processes of this
machine (file://, sqlite:///), or any machine (s3://, dynamodb://). Storage and job-log backends
declare theirs (`reach`); a runner says which one its jobs need (`Runner.backend_reach`)."""


def check_reach(cls: type) -> None:
    """Refuse a backend class whose `reach` is none of REACHES (at its definition)."""
    found = getattr(cls, "reach", None)
    if found not in REACHES:
        raise TypeError(f"{cls.__module__}.{cls.__qualname__} declares reach {found!r}: use one "
                        f"of {', '.join(REACHES)}")


class StorageIOError(TransientError):
    """Storage I/O failed (disk full, permission, throttling, connection): a retry may fix it.

    `user_fault` marks a cause the user fixes rather than time (read-only, no permission, full),
    and `fix` says how; `probe()` reports those as a UserError before a run starts.
    """

    def __init__(self, message: str, *, url: str, cause: str, user_fault: bool = False,
                 fix: str = "") -> None:
        super().__init__(message)
        self.url = url
        self.cause = cause
        self.user_fault = user_fault
        self.fix = fix

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only fields must survive pickling across worker processes.
        return (_rebuild_storage_io_error, (str(self), self.url, self.cause, self.user_fault,
                                            self.fix))


def _rebuild_storage_io_error(message: str, url: str, cause: str, user_fault: bool,
                              fix: str) -> StorageIOError:
    return StorageIOError(message, url=url, cause=cause, user_fault=user_fault, fix=fix)


def check_key(key: str) -> str:
    """A storage key is a relative, '/'-separated path with no empty, '.' or '..' parts."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise UserError(f"bad storage key {key!r}: use a relative path like 'runs/ID/plan.json'")
    return key


class Storage(ABC):
    """Where frames, segments, plans, sketches and videos live, addressed by key.

    Every write is atomic: a reader sees the old object or the new one, never part of one.
    """

    url: str
    """The URL this storage was opened from (`file:///dir`, `s3://bucket/prefix`, `memory://name`)."""

    reach: ClassVar[str] = "machine"
    """Who can use this storage (REACHES): a runner whose jobs run elsewhere needs a wider one."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        check_reach(cls)

    # -- public API: validation here, work in the primitives --------------------------------

    @traced("storage.put_bytes", key="framefarm.storage.key")
    def put_bytes(self, key: str, data: bytes) -> None:
        """Store `data` under `key`, replacing what was there, atomically."""
        self._put_bytes(check_key(key), bytes(data))

    @traced("storage.get_bytes", key="framefarm.storage.key")
    def get_bytes(self, key: str) -> bytes:
        """The object under `key`; StorageKeyError when there is none."""
        return self._get_bytes(check_key(key))

    @traced("storage.put_file", key="framefarm.storage.key")
    def put_file(self, key: str, path: str | Path, *, expires: bool = False) -> None:
        """Store the file at `path` under `key`, atomically.

        `expires` marks an intermediate object (a segment) that the backend may delete after a
        while: S3 tags it for the bucket's lifecycle rule; local folders keep everything.
        """
        self._put_file(check_key(key), Path(path), expires)

    @traced("storage.get_file", key="framefarm.storage.key")
    def get_file(self, key: str, path: str | Path) -> Path:
        """Copy the object under `key` to `path` (written atomically); returns `path`."""
        dest = Path(path)
        self._get_file(check_key(key), dest)
        return dest

    @traced("storage.exists", key="framefarm.storage.key")
    def exists(self, key: str) -> bool:
        """True when an object is stored under `key`."""
        return self._exists(check_key(key))

    @traced("storage.list", key="framefarm.storage.prefix")
    def list(self, prefix: str = "") -> list[str]:
        """Every key that starts with `prefix`, sorted."""
        return sorted(self._list(prefix))

    @traced("storage.delete", key="framefarm.storage.key")
    def delete(self, key: str) -> None:
        """Remove the object under `key`; no error when there is none."""
        self._delete(check_key(key))

    @traced("storage.probe")
    def probe(self) -> None:
        """Write and delete a small hidden object, so storage that cannot be written is found
        before any job starts: a UserError (exit 2) with the fix when the cause is the user's
        (read-only, no permission, full, no such bucket); a StorageIOError when a retry may
        fix it (throttling, a lost connection)."""
        key = f"{PROBE_PREFIX}{secrets.token_hex(6)}"
        try:
            self._put_bytes(key, _PROBE_DATA)
            self._delete(key)
        except StorageIOError as exc:
            if not exc.user_fault:
                raise
            raise UserError(f"cannot use storage {self.url} ({exc.cause}): {exc.fix}") from None

    def url_for(self, key: str) -> str:
        """The URL of `key` in this storage, e.g. file:///data/runs/x/plan.json."""
        return self.url.rstrip("/") + "/" + check_key(key)

    def local_path(self, key: str) -> Path | None:
        """A local file holding `key`'s object, when this backend has one (no copy); else None."""
        return None

    # -- primitives a backend implements ------------------------------------------------------

    @abstractmethod
    def _put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def _get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def _exists(self, key: str) -> bool: ...

    @abstractmethod
    def _list(self, prefix: str) -> builtins.list[str]: ...  # `list` is a method here

    @abstractmethod
    def _delete(self, key: str) -> None: ...

    def _put_file(self, key: str, path: Path, expires: bool = False) -> None:
        self._put_bytes(key, path.read_bytes())

    def _get_file(self, key: str, path: Path) -> None:
        data = self._get_bytes(key)
        with atomic_file(path) as f:
            f.write(data)

    def _missing(self, key: str) -> StorageKeyError:
        return StorageKeyError(self.url_for(key))


@contextmanager
def atomic_file(dest: Path) -> Iterator[BinaryIO]:
    """A new file next to `dest` to write; renamed over `dest` on success, removed on failure.

    The temporary name starts with '.', so listings can skip it. It is created with mode 0o666
    less the umask, like any new file (mkstemp's 0o600 would hide videos from other users).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def copy_file_atomic(src: Path, dest: Path) -> None:
    """Copy `src` to `dest` through a temporary file in dest's folder, then rename."""
    with src.open("rb") as s, atomic_file(dest) as f:
        shutil.copyfileobj(s, f, 1 << 20)
