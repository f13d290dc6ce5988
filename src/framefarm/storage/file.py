"""Storage in a local folder: one file per key, written atomically (temporary file, then rename)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import NoReturn
from urllib.parse import unquote

from framefarm import config
from framefarm.errors import UserError
from framefarm.storage._base import Storage, atomic_file, copy_file_atomic

# Errors that mean "this folder cannot be written", which the user fixes by choosing another one.
_UNWRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                         errno.ENOTDIR, errno.EEXIST})


class FileStorage(Storage):
    """Objects as files under `root`; a key's '/'-separated parts are folders.

    The root folder is created on the first write, so opening storage never touches the disk.
    Temporary files start with '.' and never show in `list`.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(os.path.abspath(Path(root).expanduser()))
        self.url = self.root.as_uri()

    @classmethod
    def from_url(cls, url: str) -> FileStorage:
        """`file:///abs/dir`, `file://relative/dir` (from the current folder) or a bare path."""
        path = unquote(url[len("file://"):]) if url.startswith("file://") else url
        if not path:
            raise UserError(f"storage URL {url!r} names no folder: use file:///path/to/folder")
        return cls(path)

    def __repr__(self) -> str:
        return f"FileStorage({str(self.root)!r})"

    def __reduce__(self) -> tuple[object, ...]:
        return (FileStorage, (self.root,))

    def local_path(self, key: str) -> Path | None:
        """The file holding `key`, or None when there is none."""
        path = self._path(key)
        return path if path.is_file() else None

    # -- primitives ---------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def _put_bytes(self, key: str, data: bytes) -> None:
        try:
            with atomic_file(self._path(key)) as f:
                f.write(data)
        except OSError as e:
            self._cannot_write(key, e)

    def _put_file(self, key: str, path: Path, expires: bool = False) -> None:
        try:
            copy_file_atomic(path, self._path(key))
        except OSError as e:
            if e.filename is not None and Path(e.filename) == path:
                raise  # reading the source failed, not writing here
            self._cannot_write(key, e)

    def _get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise self._missing(key) from None

    def _get_file(self, key: str, path: Path) -> None:
        src = self._path(key)
        try:
            copy_file_atomic(src, path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
            if e.filename is not None and Path(e.filename) == src:
                raise self._missing(key) from None
            raise

    def _exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _list(self, prefix: str) -> list[str]:
        # Walk only the folder the prefix points into; a prefix with parts no key can have
        # ('', '.', '..') matches nothing, and must not walk outside the root.
        folder, _, _ = prefix.rpartition("/")
        parts = folder.split("/") if folder else []
        if any(p in ("", ".", "..") for p in parts):
            return []
        start = self.root.joinpath(*parts)
        keys = []
        for dirpath, _dirs, files in os.walk(start):
            rel = Path(dirpath).relative_to(self.root).parts
            for name in files:
                if name.startswith("."):
                    continue
                key = "/".join((*rel, name))
                if key.startswith(prefix):
                    keys.append(key)
        return keys

    def _delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except (IsADirectoryError, NotADirectoryError, PermissionError):
            # A folder is not an object (Linux says EISDIR, macOS EPERM): nothing to delete.
            if self._path(key).is_file():
                raise

    def _cannot_write(self, key: str, error: OSError) -> NoReturn:
        if error.errno not in _UNWRITABLE:
            raise error
        if not self.root.is_dir() or error.errno not in (errno.ENOTDIR, errno.EEXIST):
            raise UserError(
                f"cannot write to storage folder {self.root} ({error.strerror}): use a folder "
                f"you can write to, with --storage or {config.STORAGE}") from None
        raise UserError(f"cannot store {key!r} in {self.url}: part of its path is already a "
                        f"file there; use another key") from None
