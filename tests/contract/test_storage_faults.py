"""Storage that fails: real read-only and full file systems (tmpfs mounts), a real S3 endpoint
that throttles or refuses (a local HTTP server speaking S3's error XML), a closed port, and moto
for a bucket that does not exist.

During a run, an I/O fault is a StorageIOError (a TransientError: exit 1, so the job is retried)
whose one line names the key and the cause; before a run, `probe()` makes the faults that are
the user's to fix a UserError (exit 2). Nothing already stored is lost either way.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from framefarm import _aws
from framefarm.errors import TransientError, UserError
from framefarm.storage import PROBE_PREFIX, Storage, StorageIOError, open_storage
from framefarm.storage.file import FileStorage
from framefarm.storage.memory import MemoryStorage
from framefarm.storage.s3 import S3Storage
from tests.conftest import AWS_MACHINE


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text, text
    return text


# -- real file systems ---------------------------------------------------------------------------

@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """mount(size) -> a fresh tmpfs of `size` mounted in tmp_path; unmounted afterwards.

    Tests run as root, and root writes through file modes (chmod 0o555 stops nobody), so a
    read-only or full folder has to be a real file system; without mount rights, the tests skip.
    """
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    mounted: list[Path] = []

    def mount(size: str = "1m") -> Path:
        where = tmp_path / f"fs{len(mounted)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:  # not root, or no mount rights in this container
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): needs root")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", str(where)], check=False)


def remount_read_only(where: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)


def fill(where: Path) -> None:
    """Write a file in `where` until its file system has no byte left."""
    with (where / "filler").open("wb", buffering=0) as f, pytest.raises(OSError) as full:
        while True:
            f.write(b"\0" * 4096)
    assert full.value.errno == errno.ENOSPC


def every_file(root: Path) -> list[str]:
    """Every file under `root`, hidden ones too (a left-over temporary file would show)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_read_only_file_system_during_a_run(tmpfs: Callable[..., Path], tmp_path: Path) -> None:
    fs = tmpfs()
    storage = FileStorage(fs / "store")
    storage.put_bytes("runs/r/plan.json", b"{}")
    remount_read_only(fs)
    segment = tmp_path / "segment.mp4"
    segment.write_bytes(b"segment")

    for write in (lambda: storage.put_bytes("runs/r/segments/00000.mp4", b"v"),
                  lambda: storage.put_file("runs/r/segments/00000.mp4", segment),
                  lambda: storage.delete("runs/r/plan.json")):
        with pytest.raises(StorageIOError) as caught:
            write()
        assert isinstance(caught.value, TransientError) and not isinstance(caught.value, UserError)
        assert caught.value.exit_code == 1
        line = one_line(caught.value)
        assert f"{storage.url}/runs/r/" in line and "(read-only file system)" in line
    assert storage.get_bytes("runs/r/plan.json") == b"{}"  # nothing stored is lost

    with pytest.raises(UserError) as refused:
        storage.probe()
    assert refused.value.exit_code == 2
    assert one_line(refused.value) == (
        f"cannot use storage {storage.url} (read-only file system): use a folder you can write "
        "to, with --storage or FRAMEFARM_STORAGE")


def test_storage_folder_that_cannot_be_made_is_the_users(tmpfs: Callable[..., Path]) -> None:
    fs = tmpfs()
    remount_read_only(fs)
    for root in (fs / "store", Path("/proc/nope")):
        storage = FileStorage(root)
        for action in (lambda s=storage: s.put_bytes("runs/r/plan.json", b"{}"),
                       lambda s=storage: s.probe()):
            with pytest.raises(UserError) as caught:
                action()
            line = one_line(caught.value)
            assert line.startswith(f"cannot write to storage folder {root} (")
            assert line.endswith("use a folder you can write to, with --storage or FRAMEFARM_STORAGE")
        assert storage.list() == [] and not storage.exists("runs/r/plan.json")
    assert not Path("/proc/nope").exists()


def test_full_disk(tmpfs: Callable[..., Path], tmp_path: Path) -> None:
    fs = tmpfs("64k")
    storage = FileStorage(fs / "store")
    storage.put_bytes("runs/r/plan.json", b"{}")
    storage.put_bytes("runs/r/segments/00000.mp4", b"first segment")
    fill(fs)
    segment = tmp_path / "segment.mp4"
    segment.write_bytes(os.urandom(32 * 1024))

    for write in (lambda: storage.put_file("runs/r/segments/00001.mp4", segment),
                  lambda: storage.put_bytes("runs/r/segments/00001.mp4", segment.read_bytes()),
                  # replacing an object on a full disk keeps the old one whole
                  lambda: storage.put_file("runs/r/segments/00000.mp4", segment)):
        with pytest.raises(StorageIOError) as caught:
            write()
        assert caught.value.exit_code == 1 and not isinstance(caught.value, UserError)
        line = one_line(caught.value)
        assert line.startswith(f"cannot write {storage.url}/runs/r/segments/0000")
        assert "(no space left on the disk): free space there" in line
    assert storage.get_bytes("runs/r/segments/00000.mp4") == b"first segment"
    assert every_file(fs / "store") == ["runs/r/plan.json", "runs/r/segments/00000.mp4"]

    with pytest.raises(UserError, match=r"^cannot use storage .* \(no space left on the disk\): "
                                        r"free space there, or use another folder"):
        storage.probe()

    # A retry once there is room again succeeds: that is why a full disk is exit 1.
    (fs / "filler").unlink()
    storage.probe()
    storage.put_file("runs/r/segments/00001.mp4", segment)
    assert storage.get_bytes("runs/r/segments/00001.mp4") == segment.read_bytes()
    assert not any(PROBE_PREFIX in name for name in every_file(fs / "store"))


def test_full_local_disk_while_copying_out(tmpfs: Callable[..., Path], tmp_path: Path) -> None:
    """A download to a full scratch disk names that folder, not the storage."""
    storage = FileStorage(tmp_path / "store")
    storage.put_bytes("runs/r/output.mp4", os.urandom(32 * 1024))
    scratch = tmpfs("64k")
    fill(scratch)
    with pytest.raises(StorageIOError) as caught:
        storage.get_file("runs/r/output.mp4", scratch / "video.mp4")
    line = one_line(caught.value)
    assert line.startswith(f"cannot copy {storage.url}/runs/r/output.mp4 to {scratch}/video.mp4 "
                           "(no space left on the disk)")
    assert not (scratch / "video.mp4").exists()
    assert every_file(scratch) == ["filler"]


def test_io_error_is_transient_even_at_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EIO (a failing disk, a network file system's hiccup) is nobody's input: exit 1 always.
    Faked: no file system here fails on demand."""
    storage = FileStorage(tmp_path / "store")
    storage.put_bytes("k", b"v")

    def broken(*args: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", broken)
    for action in (lambda: storage.put_bytes("k", b"w"), storage.probe):
        with pytest.raises(StorageIOError, match=r"\(I/O error\): check the disk; a retry may "
                                                 r"succeed$") as caught:
            action()
        assert not isinstance(caught.value, UserError)
    monkeypatch.undo()
    assert storage.get_bytes("k") == b"v"


def test_unreadable_folder_is_not_an_empty_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A listing that cannot read a folder fails; looking empty would make encode call every
    segment missing (exit 2, no retry)."""
    storage = FileStorage(tmp_path / "store")
    storage.put_bytes("runs/r/segments/00000.mp4", b"v")
    real_scandir = os.scandir

    def deny(path: Any) -> Any:
        if str(path).endswith("segments"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", deny)
    with pytest.raises(StorageIOError, match=r"^cannot list .*/runs/r/segments/ \(permission denied\)"):
        storage.list("runs/r/segments/")
    assert storage.list("runs/other/") == []  # a folder that is not there holds no keys


# -- probe on every backend ----------------------------------------------------------------------

@pytest.fixture(params=["file", "memory", "s3"])
def any_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "file":
        return FileStorage(tmp_path / "store")
    if request.param == "memory":
        return MemoryStorage(uuid.uuid4().hex)
    bucket: str = request.getfixturevalue("bucket")
    return S3Storage(bucket, "framefarm")


def test_probe_leaves_nothing_behind(any_storage: Storage) -> None:
    any_storage.put_bytes("runs/r/plan.json", b"{}")
    any_storage.probe()
    any_storage.probe()
    assert any_storage.list() == ["runs/r/plan.json"]
    if isinstance(any_storage, S3Storage):
        import boto3

        found = boto3.client("s3").list_objects_v2(Bucket=any_storage.bucket)
        assert [item["Key"] for item in found["Contents"]] == ["framefarm/runs/r/plan.json"]


def test_probe_of_a_missing_bucket(aws_env: dict[str, str]) -> None:
    storage = S3Storage(f"{uuid.uuid4().hex}-missing", "framefarm")
    with pytest.raises(UserError) as caught:
        storage.probe()
    assert caught.value.exit_code == 2
    assert one_line(caught.value).startswith(f"S3 bucket {storage.bucket!r} does not exist")


# -- S3 that throttles, fails, refuses, or is not there --------------------------------------------

class FakeS3:
    """An HTTP server on 127.0.0.1 that answers every request with one S3 error, as S3 does
    (XML body, status), and counts the requests."""

    def __init__(self) -> None:
        self.status, self.code = 503, "SlowDown"
        self.requests = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                fake.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{fake.code}</Code>'
                        f"<Message>{fake.code}</Message><RequestId>1</RequestId></Error>").encode()
                self.send_response(fake.status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def point_aws_at(url: str, monkeypatch: pytest.MonkeyPatch, *, attempts: int = 1) -> None:
    """AWS clients that go to `url` and make `attempts` per call (ten, with backoff of up to 20 s
    each, would make every test here take minutes)."""
    for name, value in {**AWS_MACHINE, "AWS_ENDPOINT_URL": url}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setattr(_aws, "MAX_ATTEMPTS", attempts)
    _aws.reset()


@pytest.fixture
def fake_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeS3]:
    fake = FakeS3()
    point_aws_at(fake.url, monkeypatch)
    yield fake
    fake.close()
    _aws.reset()


def s3_actions(storage: Storage, tmp_path: Path) -> dict[str, Callable[[], object]]:
    (tmp_path / "seg").write_bytes(b"segment")
    return {"put_bytes": lambda: storage.put_bytes("runs/r/segments/00000.mp4", b"v"),
            "put_file": lambda: storage.put_file("runs/r/segments/00000.mp4", tmp_path / "seg"),
            "get_bytes": lambda: storage.get_bytes("runs/r/plan.json"),
            "get_file": lambda: storage.get_file("runs/r/plan.json", tmp_path / "plan.json"),
            "exists": lambda: storage.exists("runs/r/plan.json"),
            "list": lambda: storage.list("runs/r/segments/"),
            "delete": lambda: storage.delete("runs/r/plan.json")}


@pytest.mark.parametrize(("status", "code"), [(503, "SlowDown"), (500, "InternalError"),
                                              (503, "ServiceUnavailable")])
def test_throttled_or_failing_s3_is_transient(fake_s3: FakeS3, tmp_path: Path, status: int,
                                              code: str) -> None:
    fake_s3.status, fake_s3.code = status, code
    storage = open_storage("s3://bucket/framefarm")
    for name, action in s3_actions(storage, tmp_path).items():
        _aws.reset()  # a new client: adaptive retry mode slows a throttled one down, by design
        with pytest.raises(StorageIOError) as caught:
            action()
        assert not isinstance(caught.value, UserError), name
        line = one_line(caught.value)
        assert line.startswith("cannot "), line
        assert "s3://bucket/framefarm/runs/r/" in line, line
        assert f"(S3 answered {code} after 1 attempts): a retry may succeed" in line \
            or f"(S3 answered {status} after 1 attempts)" in line, line  # HEAD has no body
    assert not (tmp_path / "plan.json").exists()
    with pytest.raises(StorageIOError):
        storage.probe()  # a busy S3 before a run is still worth a retry, not the user's fault


def test_throttled_s3_is_retried_first(fake_s3: FakeS3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_aws, "MAX_ATTEMPTS", 2)
    _aws.reset()
    storage = open_storage("s3://bucket/framefarm")
    with pytest.raises(StorageIOError, match=r"^cannot write s3://bucket/framefarm/runs/r/plan.json "
                                             r"\(S3 answered SlowDown after 2 attempts\)"):
        storage.put_bytes("runs/r/plan.json", b"{}")
    assert fake_s3.requests == 2


def test_refused_s3_is_transient_during_a_run_and_the_users_before(fake_s3: FakeS3,
                                                                    tmp_path: Path) -> None:
    fake_s3.status, fake_s3.code = 403, "AccessDenied"
    storage = open_storage("s3://bucket/framefarm")
    for name, action in s3_actions(storage, tmp_path).items():
        with pytest.raises(StorageIOError) as caught:
            action()
        line = one_line(caught.value)
        assert line.startswith("S3 refused access to s3://bucket/framefarm (AccessDenied)"), name
        assert caught.value.exit_code == 1
    with pytest.raises(UserError) as refused:
        storage.probe()
    assert one_line(refused.value) == (
        "cannot use storage s3://bucket/framefarm (S3 refused access: AccessDenied): check the "
        "AWS credentials and the bucket's policy, or set FRAMEFARM_STORAGE")


def test_unreachable_s3_is_transient(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    point_aws_at(f"http://127.0.0.1:{port}", monkeypatch)
    storage = open_storage("s3://bucket/framefarm")
    try:
        for name, action in [*s3_actions(storage, tmp_path).items(), ("probe", storage.probe)]:
            with pytest.raises(StorageIOError) as caught:
                action()
            line = one_line(caught.value)
            assert "(connection failed: Could not connect to the endpoint URL" in line, name
            assert line.endswith("a retry may succeed"), name
    finally:
        _aws.reset()


def test_storage_io_error_survives_pickling() -> None:
    import pickle

    error = StorageIOError("cannot write x (full): free space", url="file:///x", cause="full",
                           user_fault=True, fix="free space")
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.url, copy.cause, copy.user_fault, copy.fix) == (
        str(error), "file:///x", "full", True, "free space")

