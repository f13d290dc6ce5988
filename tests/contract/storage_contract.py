"""The behaviour every Storage backend shares, written once (fsspec's tests/abstract style).

A backend's test class subclasses `StorageContract` and implements `make_storage`; every test
here then runs against that backend.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from framefarm.errors import StorageKeyError, UserError
from framefarm.storage import Storage, open_storage

BAD_KEYS = ["", "/abs/key", "a/../b", "..", "../up", "a//b", "./a", "a/./b", "a/", "."]


class StorageContract:
    """Subclass and implement `make_storage`; a fresh, empty storage per test."""

    def make_storage(self, tmp_path: Path) -> Storage:
        raise NotImplementedError

    @pytest.fixture
    def storage(self, tmp_path: Path) -> Storage:
        return self.make_storage(tmp_path)

    # -- bytes and files ----------------------------------------------------------------------

    def test_bytes_round_trip(self, storage: Storage) -> None:
        data = bytes(range(256)) * 4
        storage.put_bytes("runs/r1/plan.json", data)
        assert storage.get_bytes("runs/r1/plan.json") == data

    def test_empty_object(self, storage: Storage) -> None:
        storage.put_bytes("empty", b"")
        assert storage.get_bytes("empty") == b""
        assert storage.exists("empty")

    def test_file_round_trip(self, storage: Storage, tmp_path: Path) -> None:
        src = tmp_path / "in.bin"
        src.write_bytes(b"\x00segment\xff" * 100)
        storage.put_file("runs/r1/segments/00000.mp4", src)
        dest = tmp_path / "out" / "deeper" / "copy.mp4"
        assert storage.get_file("runs/r1/segments/00000.mp4", dest) == dest
        assert dest.read_bytes() == src.read_bytes()

    def test_get_file_accepts_str_path(self, storage: Storage, tmp_path: Path) -> None:
        storage.put_bytes("k", b"v")
        assert storage.get_file("k", str(tmp_path / "v.txt")).read_bytes() == b"v"

    def test_put_file_then_get_bytes(self, storage: Storage, tmp_path: Path) -> None:
        src = tmp_path / "sketch.py"
        src.write_text("def render(ctx): ...\n")
        storage.put_file("sketches/abc.py", str(src))
        assert storage.get_bytes("sketches/abc.py") == src.read_bytes()

    def test_overwrite(self, storage: Storage, tmp_path: Path) -> None:
        storage.put_bytes("k", b"first, and longer than the second")
        storage.put_bytes("k", b"second")
        assert storage.get_bytes("k") == b"second"
        src = tmp_path / "third"
        src.write_bytes(b"third")
        storage.put_file("k", src)
        assert storage.get_bytes("k") == b"third"
        assert storage.list() == ["k"]

    def test_unicode_and_spaces_in_keys(self, storage: Storage) -> None:
        key = "runs/été 2024/frame ü.png"
        storage.put_bytes(key, b"x")
        assert storage.get_bytes(key) == b"x"
        assert storage.list("runs/") == [key]

    def test_large_object(self, storage: Storage, tmp_path: Path) -> None:
        data = os.urandom(5 * 1024 * 1024)
        storage.put_bytes("big/bytes", data)
        assert storage.get_bytes("big/bytes") == data
        src = tmp_path / "big.bin"
        src.write_bytes(data)
        storage.put_file("big/file", src)
        assert storage.get_file("big/file", tmp_path / "back.bin").read_bytes() == data

    # -- missing keys -------------------------------------------------------------------------

    def test_missing_key(self, storage: Storage) -> None:
        with pytest.raises(StorageKeyError) as caught:
            storage.get_bytes("runs/nope/plan.json")
        assert isinstance(caught.value, KeyError)
        assert isinstance(caught.value, UserError)
        assert caught.value.url == storage.url_for("runs/nope/plan.json")
        assert storage.url_for("runs/nope/plan.json") in str(caught.value)

    def test_missing_key_get_file_leaves_dest_alone(self, storage: Storage,
                                                    tmp_path: Path) -> None:
        dest = tmp_path / "out" / "keep.txt"
        dest.parent.mkdir()
        dest.write_bytes(b"keep")
        with pytest.raises(StorageKeyError):
            storage.get_file("nope", dest)
        assert dest.read_bytes() == b"keep"
        assert [p.name for p in dest.parent.iterdir()] == ["keep.txt"]

    def test_folder_is_not_an_object(self, storage: Storage) -> None:
        storage.put_bytes("runs/r1/plan.json", b"{}")
        assert not storage.exists("runs/r1")
        with pytest.raises(StorageKeyError):
            storage.get_bytes("runs/r1")
        storage.delete("runs/r1")
        assert storage.exists("runs/r1/plan.json")

    # -- exists, list, delete -----------------------------------------------------------------

    def test_exists(self, storage: Storage) -> None:
        assert not storage.exists("k")
        storage.put_bytes("k", b"v")
        assert storage.exists("k")

    def test_list_by_prefix_sorted(self, storage: Storage) -> None:
        keys = ["runs/b/3", "runs/a/1", "sketches/x.py", "runs/ab/2", "runs/a/0"]
        for key in keys:
            storage.put_bytes(key, key.encode())
        assert storage.list() == sorted(keys)
        assert storage.list("") == sorted(keys)
        assert storage.list("runs/a") == ["runs/a/0", "runs/a/1", "runs/ab/2"]
        assert storage.list("runs/a/") == ["runs/a/0", "runs/a/1"]
        assert storage.list("runs/a/1") == ["runs/a/1"]
        assert storage.list("sketches/") == ["sketches/x.py"]
        assert storage.list("nothing/") == []
        assert storage.list("nothing") == []

    def test_list_prefix_outside_keys_matches_nothing(self, storage: Storage) -> None:
        storage.put_bytes("runs/a/1", b"")
        for prefix in ["/", "../", "runs/../", "./runs", "runs//"]:
            assert storage.list(prefix) == []

    def test_list_empty_storage(self, storage: Storage) -> None:
        assert storage.list() == []

    def test_list_has_nothing_extra(self, storage: Storage, tmp_path: Path) -> None:
        src = tmp_path / "f"
        src.write_bytes(b"f")
        storage.put_bytes("a/x", b"1")
        storage.put_bytes("a/x", b"2")
        storage.put_file("a/y", src)
        storage.put_file("a/y", src)
        storage.get_file("a/x", tmp_path / "got")
        storage.put_bytes("a/z", b"3")
        storage.delete("a/z")
        assert storage.list() == ["a/x", "a/y"]

    def test_delete(self, storage: Storage) -> None:
        storage.put_bytes("runs/r/k", b"v")
        storage.delete("runs/r/k")
        assert not storage.exists("runs/r/k")
        assert storage.list() == []
        with pytest.raises(StorageKeyError):
            storage.get_bytes("runs/r/k")

    def test_delete_is_idempotent(self, storage: Storage) -> None:
        storage.delete("never/there")
        storage.put_bytes("k", b"v")
        storage.delete("k")
        storage.delete("k")
        assert not storage.exists("k")

    def test_put_after_delete(self, storage: Storage) -> None:
        storage.put_bytes("runs/r/k", b"1")
        storage.delete("runs/r/k")
        storage.put_bytes("runs/r/k", b"2")
        assert storage.get_bytes("runs/r/k") == b"2"

    # -- keys ---------------------------------------------------------------------------------

    @pytest.mark.parametrize("key", BAD_KEYS)
    def test_bad_keys_rejected(self, storage: Storage, tmp_path: Path, key: str) -> None:
        src = tmp_path / "f"
        src.write_bytes(b"f")
        calls: list[Callable[[], object]] = [
            lambda: storage.put_bytes(key, b"x"),
            lambda: storage.get_bytes(key),
            lambda: storage.put_file(key, src),
            lambda: storage.get_file(key, tmp_path / "out"),
            lambda: storage.exists(key),
            lambda: storage.delete(key),
            lambda: storage.url_for(key),
        ]
        for call in calls:
            with pytest.raises(UserError, match="bad storage key"):
                call()
        assert storage.list() == []
        assert not (tmp_path / "out").exists()

    def test_url_for(self, storage: Storage) -> None:
        url = storage.url_for("runs/r1/plan.json")
        assert url == storage.url.rstrip("/") + "/runs/r1/plan.json"

    # -- URLs ---------------------------------------------------------------------------------

    def test_reopen_url_sees_the_same_objects(self, storage: Storage) -> None:
        storage.put_bytes("runs/r1/plan.json", b"{}")
        again = open_storage(storage.url)
        assert again.url == storage.url
        assert again.get_bytes("runs/r1/plan.json") == b"{}"
        again.put_bytes("sketches/s.py", b"pass")
        assert storage.get_bytes("sketches/s.py") == b"pass"

    def test_parent_of_url_for_opens_a_view(self, storage: Storage) -> None:
        # Jobs fetch an object by URL: open the URL's parent, then get the last part.
        storage.put_bytes("sketches/abc.py", b"pass")
        parent, name = storage.url_for("sketches/abc.py").rsplit("/", 1)
        view = open_storage(parent)
        assert view.get_bytes(name) == b"pass"
        assert view.list() == [name]
        assert view.url_for(name) == storage.url_for("sketches/abc.py")

    # -- atomicity and concurrency ------------------------------------------------------------

    @pytest.mark.skipif(sys.platform == "win32", reason="POSIX rename semantics")
    def test_get_file_replaces_atomically(self, storage: Storage, tmp_path: Path) -> None:
        storage.put_bytes("k", b"new contents")
        dest = tmp_path / "out" / "dest.txt"
        dest.parent.mkdir()
        dest.write_bytes(b"old contents")
        with dest.open("rb") as reader:
            storage.get_file("k", dest)
            # A reader that opened the old file still reads all of it: dest was renamed over,
            # not rewritten in place.
            assert reader.read() == b"old contents"
        assert dest.read_bytes() == b"new contents"
        assert [p.name for p in dest.parent.iterdir()] == ["dest.txt"]

    @pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
    def test_get_file_mode_follows_umask(self, storage: Storage, tmp_path: Path) -> None:
        # Not mkstemp's 0o600: a video fetched for the user must be readable like any new file.
        storage.put_bytes("k", b"v")
        dest = storage.get_file("k", tmp_path / "v")
        umask = os.umask(0o022)
        os.umask(umask)
        assert dest.stat().st_mode & 0o777 == 0o666 & ~umask

    def test_threads_write_at_once(self, storage: Storage) -> None:
        def write(worker: int) -> None:
            for i in range(20):
                storage.put_bytes(f"w{worker}/{i:02d}", f"{worker}:{i}".encode())
                storage.put_bytes("shared", f"{worker}:{i}".encode())

        threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(storage.list()) == 8 * 20 + 1
        assert storage.get_bytes("w3/07") == b"3:7"
        worker, i = storage.get_bytes("shared").decode().split(":")
        assert 0 <= int(worker) < 8 and 0 <= int(i) < 20

    def test_local_path_holds_the_object_or_is_none(self, storage: Storage) -> None:
        storage.put_bytes("k", b"v")
        path = storage.local_path("k")
        assert path is None or path.read_bytes() == b"v"
        assert storage.local_path("missing") is None
