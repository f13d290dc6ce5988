"""Storage in a local folder: one file per key, written atomically (temporary file, then rename)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import NoReturn
from urllib.parse import unquote

from framefarm import config
from framefarm.errors import UserError
from framefarm.storage._base import Storage, StorageIOError, atomic_file, copy_file_atomic

# I/O faults of a folder in use: (cause, whether the user fixes it rather than time, the fix).
_FIX_FOLDER = f"use a folder you can write to, with --storage or {config.STORAGE}"
_FAULTS: dict[int, tuple[str, bool, str]] = {
    errno.ENOSPC: ("no space left on the disk", True,
                   f"free space there, or use another folder with --storage or {config.STORAGE}"),
    errno.EDQUOT: ("the disk quota is used up", True,
                   f"free space there, or use another folder with --storage or {config.STORAGE}"),
    errno.EACCES: ("permission denied", True, _FIX_FOLDER),
    errno.EPERM: ("operation not permitted", True, _FIX_FOLDER),
    errno.EROFS: ("read-only file system", True, _FIX_FOLDER),
    errno.EIO: ("I/O error", False, "check the disk; a retry may succeed"),
    errno.ESTALE: ("stale file handle", False, "a retry may succeed"),  # NFS, EFS
    errno.ETIMEDOUT: ("timed out", False, "a retry may succeed"),  # network file systems
    errno.ENOENT: ("a folder vanished during the write", False, "a retry may succeed"),
}
_COLLISION = frozenset({errno.ENOTDIR, errno.EEXIST, errno.EISDIR})
"""A key whose path crosses an object (a/b below a), or names a folder (a above a/b)."""


class FileStorage(Storage):
    """Objects as files under `root`; a key's '/'-separated parts are folders.

    The root folder is created on the first write, so opening storage never touches the disk; a
    root that cannot be created is a UserError. I/O faults after that (a full disk, permissions
    changed under a run) are StorageIOErrors naming the key and the cause. Temporary files start
    with '.' and never show in `list`.
    """

    reach = "machine"  # every process of this machine sees the folder

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
        except OSError as e:
            self._fault("read", key, e)

    def _get_file(self, key: str, path: Path) -> None:
        src = self._path(key)
        try:
            copy_file_atomic(src, path)
        except OSError as e:
            from_src = e.filename is not None and Path(e.filename) == src
            if from_src and isinstance(e, FileNotFoundError | IsADirectoryError | NotADirectoryError):
                raise self._missing(key) from None
            if from_src:
                self._fault("read", key, e)
            self._fault("copy", key, e, to=path)

    def _exists(self, key: str) -> bool:
        try:
            return self._path(key).is_file()
        except OSError as e:
            self._fault("read", key, e)

    def _list(self, prefix: str) -> list[str]:
        # Walk only the folder the prefix points into; a prefix with parts no key can have
        # ('', '.', '..') matches nothing, and must not walk outside the root.
        folder, _, _ = prefix.rpartition("/")
        parts = folder.split("/") if folder else []
        if any(p in ("", ".", "..") for p in parts):
            return []
        start = self.root.joinpath(*parts)

        def unreadable(error: OSError) -> None:
            # A folder that is not there holds no keys; one that cannot be read must not look
            # empty (encode would call its segments missing).
            if not isinstance(error, FileNotFoundError | NotADirectoryError):
                self._fault("list", prefix or ".", error)

        keys = []
        for dirpath, _dirs, files in os.walk(start, onerror=unreadable):
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
        except (IsADirectoryError, NotADirectoryError, PermissionError) as e:
            # A folder is not an object (Linux says EISDIR, macOS EPERM): nothing to delete.
            if self._is_file(key):
                self._fault("delete", key, e)
        except OSError as e:
            self._fault("delete", key, e)

    def _is_file(self, key: str) -> bool:
        try:
            return self._path(key).is_file()
        except OSError:
            return False

    def _root_is_folder(self) -> bool:
        try:
            return self.root.is_dir()
        except OSError:
            return False

    def _cannot_write(self, key: str, error: OSError) -> NoReturn:
        if not self._root_is_folder():
            # The storage folder itself cannot be made: no retry fixes that.
            if error.errno in _FAULTS or error.errno in _COLLISION:
                raise UserError(
                    f"cannot write to storage folder {self.root} ({error.strerror}): {_FIX_FOLDER}"
                ) from None
            raise error
        if error.errno in _COLLISION:
            raise UserError(f"cannot store {key!r} in {self.url}: part of its path is already "
                            f"a file or folder there; use another key") from None
        self._fault("write", key, error)

    def _fault(self, action: str, key: str, error: OSError, *, to: Path | None = None) -> NoReturn:
        """A StorageIOError for `error` while doing `action` on `key`; other errors go on."""
        known = _FAULTS.get(error.errno or 0)
        if known is None:
            raise error
        cause, user_fault, fix = known
        if action == "copy" and to is not None:
            # Writing the local copy failed (a full scratch disk, say): that folder is at fault.
            what = f"cannot copy {self.url_for(key)} to {to}"
            fix = "free space there or check its permissions; a retry may succeed"
        elif action == "list":  # a prefix, or "." for everything: no key
            what = f"cannot list {self.url if key == '.' else f'{self.url}/{key}'}"
        else:
            what = f"cannot {action} {self.url_for(key)}"
        raise StorageIOError(f"{what} ({cause}): {fix}", url=self.url, cause=cause,
                             user_fault=user_fault, fix=fix) from None
