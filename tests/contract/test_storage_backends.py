"""Every storage backend against the contract, then what is particular to each, then URLs."""

from __future__ import annotations

import errno
import os
import pickle
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from storage_contract import StorageContract

from framefarm.errors import MissingExtraError, StorageKeyError, UserError
from framefarm.storage import BACKENDS, Backend, Storage, StorageIOError, open_storage, split_url
from framefarm.storage.file import FileStorage
from framefarm.storage.memory import MemoryStorage
from framefarm.storage.s3 import S3Storage


class TestFileStorage(StorageContract):
    def make_storage(self, tmp_path: Path) -> Storage:
        return FileStorage(tmp_path / "store")

    def test_url_is_the_root_as_uri(self, tmp_path: Path) -> None:
        assert FileStorage(tmp_path / "a b").url == (tmp_path / "a b").as_uri()

    def test_objects_are_plain_files(self, tmp_path: Path) -> None:
        storage = FileStorage(tmp_path / "store")
        storage.put_bytes("runs/r1/plan.json", b"{}")
        path = tmp_path / "store" / "runs" / "r1" / "plan.json"
        assert path.read_bytes() == b"{}"
        assert storage.local_path("runs/r1/plan.json") == path
        assert storage.local_path("runs/r1") is None

    def test_root_is_created_on_first_write(self, tmp_path: Path) -> None:
        storage = FileStorage(tmp_path / "later" / "store")
        assert storage.list() == []
        assert not storage.exists("k")
        assert not (tmp_path / "later").exists()
        storage.put_bytes("k", b"v")
        assert (tmp_path / "later" / "store" / "k").is_file()

    def test_temporary_files_are_not_listed(self, tmp_path: Path) -> None:
        storage = FileStorage(tmp_path)
        storage.put_bytes("runs/r/k", b"v")
        (tmp_path / "runs" / "r" / ".k.1234abcd").write_bytes(b"half")
        assert storage.list() == ["runs/r/k"]

    def test_root_that_cannot_be_created(self, tmp_path: Path) -> None:
        (tmp_path / "a-file").write_bytes(b"")
        storage = FileStorage(tmp_path / "a-file" / "store")
        with pytest.raises(UserError) as caught:
            storage.put_bytes("k", b"v")
        message = str(caught.value)
        assert str(tmp_path / "a-file" / "store") in message
        assert "FRAMEFARM_STORAGE" in message
        assert "\n" not in message

    def test_root_that_is_a_file(self, tmp_path: Path) -> None:
        (tmp_path / "store").write_bytes(b"")
        src = tmp_path / "src"
        src.write_bytes(b"v")
        with pytest.raises(UserError, match="cannot write to storage folder"):
            FileStorage(tmp_path / "store").put_file("k", src)

    def test_permission_denied(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        # Permissions taken away during a run, faked (tests/contract/test_storage_faults.py has
        # real read-only and full file systems): a retry may work, so exit 1, not 2; before a
        # run, probe() calls it the user's to fix.
        def deny(*args: object) -> int:
            raise PermissionError(errno.EACCES, "Permission denied", str(args[0]))

        storage = FileStorage(tmp_path / "store")
        monkeypatch.setattr(os, "open", deny)
        with pytest.raises(StorageIOError, match=r"cannot write file://.*/store/k \(permission "
                                                 r"denied\)") as caught:
            storage.put_bytes("k", b"v")
        assert caught.value.exit_code == 1 and not isinstance(caught.value, UserError)
        with pytest.raises(UserError, match=r"cannot use storage file://.*/store \(permission "
                                            r"denied\): use a folder you can write to"):
            storage.probe()

    def test_key_below_an_object(self, tmp_path: Path) -> None:
        storage = FileStorage(tmp_path)
        storage.put_bytes("a", b"object")
        with pytest.raises(UserError, match="'a/b'"):
            storage.put_bytes("a/b", b"v")
        assert storage.get_bytes("a") == b"object"

    def test_missing_source_file_is_not_a_storage_error(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError):
            FileStorage(tmp_path / "store").put_file("k", tmp_path / "no-such-file")

    def test_pickles(self, tmp_path: Path) -> None:
        storage = FileStorage(tmp_path)
        storage.put_bytes("k", b"v")
        assert pickle.loads(pickle.dumps(storage)).get_bytes("k") == b"v"


class TestMemoryStorage(StorageContract):
    def make_storage(self, tmp_path: Path) -> Storage:
        return MemoryStorage(f"test-{uuid.uuid4().hex}")

    def test_one_object_per_name(self) -> None:
        name = uuid.uuid4().hex
        assert open_storage(f"memory://{name}") is open_storage(f"memory://{name}")
        assert open_storage(f"memory://{name}") is not open_storage(f"memory://{name}-other")

    def test_same_name_shares_objects(self) -> None:
        name = uuid.uuid4().hex
        MemoryStorage(name).put_bytes("k", b"v")
        assert open_storage(f"memory://{name}").get_bytes("k") == b"v"
        assert MemoryStorage(f"{name}-other").list() == []

    def test_prefix_view(self) -> None:
        name = uuid.uuid4().hex
        view = open_storage(f"memory://{name}/runs/r1")
        view.put_bytes("plan.json", b"{}")
        assert MemoryStorage(name).list() == ["runs/r1/plan.json"]
        assert view.url_for("plan.json") == f"memory://{name}/runs/r1/plan.json"

    def test_bad_prefix(self) -> None:
        with pytest.raises(UserError, match="bad storage URL"):
            MemoryStorage("name/../up")

    def test_clear(self) -> None:
        storage = MemoryStorage(uuid.uuid4().hex)
        storage.put_bytes("k", b"v")
        storage.clear()
        assert storage.list() == []

    def test_pickle_keeps_the_name(self) -> None:
        storage = MemoryStorage(uuid.uuid4().hex)
        storage.put_bytes("k", b"v")
        assert pickle.loads(pickle.dumps(storage)).get_bytes("k") == b"v"


class TestS3Storage(StorageContract):
    """Real HTTP calls from boto3 to a moto server; a fresh bucket per test."""

    @pytest.fixture(autouse=True)
    def _bucket(self, bucket: str) -> None:
        self.bucket = bucket

    def make_storage(self, tmp_path: Path) -> Storage:
        return S3Storage(self.bucket, "framefarm")

    def test_objects_live_under_the_prefix(self, storage: Storage) -> None:
        import boto3

        storage.put_bytes("runs/r1/plan.json", b"{}")
        found = boto3.client("s3").get_object(Bucket=self.bucket, Key="framefarm/runs/r1/plan.json")
        assert found["Body"].read() == b"{}"
        assert storage.url_for("runs/r1/plan.json") == f"s3://{self.bucket}/framefarm/runs/r1/plan.json"

    def test_objects_outside_the_prefix_are_not_listed(self, storage: Storage) -> None:
        import boto3

        boto3.client("s3").put_object(Bucket=self.bucket, Key="elsewhere/k", Body=b"x")
        boto3.client("s3").put_object(Bucket=self.bucket, Key="framefarmish/k", Body=b"x")
        storage.put_bytes("k", b"v")
        assert storage.list() == ["k"]

    def test_no_prefix(self) -> None:
        storage = open_storage(f"s3://{self.bucket}")
        storage.put_bytes("a/b", b"v")
        assert storage.url == f"s3://{self.bucket}"
        assert storage.list() == ["a/b"]
        assert storage.url_for("a/b") == f"s3://{self.bucket}/a/b"

    def test_big_file_goes_up_in_parts(self, storage: Storage, tmp_path: Path) -> None:
        data = os.urandom(9 * 1024 * 1024)  # above boto3's 8 MB multipart threshold
        (tmp_path / "big").write_bytes(data)
        storage.put_file("runs/r/output.mp4", tmp_path / "big")
        assert storage.get_file("runs/r/output.mp4", tmp_path / "back").read_bytes() == data

    def test_expiring_objects_carry_the_lifecycle_tag(self, storage: Storage, tmp_path: Path) -> None:
        import boto3

        from framefarm.storage.s3 import EXPIRES_TAG

        (tmp_path / "seg").write_bytes(b"segment")
        storage.put_file("runs/r/segments/00000.mp4", tmp_path / "seg", expires=True)
        storage.put_file("runs/r/output.mp4", tmp_path / "seg")
        s3 = boto3.client("s3")

        def tags(key: str) -> set[str]:
            found = s3.get_object_tagging(Bucket=self.bucket, Key=f"framefarm/{key}")["TagSet"]
            return {f"{t['Key']}={t['Value']}" for t in found}

        assert tags("runs/r/segments/00000.mp4") == {EXPIRES_TAG}
        assert tags("runs/r/output.mp4") == set()

    def test_missing_bucket_is_one_line(self, aws_env: dict[str, str], tmp_path: Path) -> None:
        storage = open_storage("s3://no-such-bucket-for-framefarm/p")
        (tmp_path / "f").write_bytes(b"v")
        # HEAD (exists, get_file) answers a bare 404, upload_file wraps its error: all the same.
        for action in (lambda: storage.put_bytes("k", b"v"), lambda: storage.get_bytes("k"),
                       storage.list, lambda: storage.exists("k"),
                       lambda: storage.get_file("k", tmp_path / "out"),
                       lambda: storage.put_file("k", tmp_path / "f"), lambda: storage.delete("k")):
            with pytest.raises(UserError) as caught:
                action()
            message = str(caught.value)
            assert "S3 bucket 'no-such-bucket-for-framefarm' does not exist" in message
            assert "FRAMEFARM_STORAGE" in message and "\n" not in message
            assert caught.value.exit_code == 2
        assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # no partial download left

    def test_missing_key_answered_403(self, storage: Storage, tmp_path: Path) -> None:
        """S3 answers 403, not 404, for a missing key to a caller without s3:ListBucket on it (the
        stack's job role may list only under its prefix): still a missing key, not a refusal."""
        from framefarm import _aws

        def forbidden(**kwargs: object) -> tuple[object, dict[str, object]]:
            http = type("Response", (), {"status_code": 403, "headers": {}})()
            return http, {"Error": {"Code": "403", "Message": "Forbidden"},
                          "ResponseMetadata": {"HTTPStatusCode": 403}}

        storage.put_bytes("runs/r/there", b"v")
        events = _aws.client("s3").meta.events
        events.register("before-call.s3.HeadObject", forbidden)
        events.register("before-call.s3.GetObject", forbidden)
        assert storage.exists("runs/r/missing") is False
        assert storage.exists("runs/r/ther") is False  # a prefix of a stored key is no key
        with pytest.raises(StorageKeyError):
            storage.get_bytes("runs/r/missing")
        with pytest.raises(StorageKeyError):
            storage.get_file("runs/r/missing", tmp_path / "out")
        # A 403 on a key that is listed is a refusal, in one line; during a run a retry may
        # get through (a role's policy still propagating), so exit 1.
        with pytest.raises(StorageIOError, match=r"S3 refused access to .*\(403\)") as caught:
            storage.get_bytes("runs/r/there")
        assert not isinstance(caught.value, UserError) and "\n" not in str(caught.value)
        assert caught.value.exit_code == 1

    def test_list_reads_every_page(self, storage: Storage) -> None:
        import boto3

        from framefarm import _aws

        def small_pages(params: dict[str, object], **kwargs: object) -> None:
            params.setdefault("MaxKeys", 100)  # S3's pages hold 1,000: fewer objects, same paths

        pages: list[object] = []
        events = _aws.client("s3").meta.events
        events.register("provide-client-params.s3.ListObjectsV2", small_pages)
        events.register("after-call.s3.ListObjectsV2", lambda **kwargs: pages.append(1))
        s3 = boto3.client("s3")
        keys = [f"runs/r/frames/{i:06d}.png" for i in range(250)]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda k: s3.put_object(Bucket=self.bucket, Key=f"framefarm/{k}",
                                                  Body=b""), keys))
        assert storage.list("runs/r/frames/") == keys
        assert len(pages) == 3

    def test_pickles_without_its_client(self, storage: Storage) -> None:
        storage.put_bytes("k", b"v")
        copy = pickle.loads(pickle.dumps(storage))
        assert copy.get_bytes("k") == b"v"
        assert copy.url == storage.url


@pytest.mark.parametrize(("url", "bucket", "prefix", "canonical"), [
    ("s3://b", "b", "", "s3://b"),
    ("s3://b/", "b", "", "s3://b"),
    ("s3://b/p/q", "b", "p/q", "s3://b/p/q"),
    ("s3://b/p/q/", "b", "p/q", "s3://b/p/q"),
    ("S3://b/p", "b", "p", "s3://b/p"),
])
def test_s3_url(url: str, bucket: str, prefix: str, canonical: str) -> None:
    storage = open_storage(url)  # opening makes no call: no AWS needed
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix, storage.url) == (bucket, prefix, canonical)


def test_s3_url_without_a_bucket() -> None:
    with pytest.raises(UserError, match="names no bucket: use s3://BUCKET/PREFIX"):
        open_storage("s3://")


# -- open_storage ------------------------------------------------------------------------------


def test_file_url_absolute(tmp_path: Path) -> None:
    storage = open_storage(tmp_path.as_uri())
    assert isinstance(storage, FileStorage)
    assert storage.root == tmp_path
    assert storage.url == tmp_path.as_uri()


def test_file_url_with_escapes(tmp_path: Path) -> None:
    folder = tmp_path / "with space"
    storage = open_storage(folder.as_uri())
    assert isinstance(storage, FileStorage)
    assert storage.root == folder


def test_file_url_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    storage = open_storage("file://data/store")
    assert isinstance(storage, FileStorage)
    assert storage.root == tmp_path / "data" / "store"
    assert storage.url == (tmp_path / "data" / "store").as_uri()


@pytest.mark.parametrize("path", ["data", "./data", "data/../data"])
def test_bare_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    monkeypatch.chdir(tmp_path)
    storage = open_storage(path)
    assert isinstance(storage, FileStorage)
    assert storage.root == tmp_path / "data"


def test_bare_absolute_path(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path))
    assert isinstance(storage, FileStorage)
    assert storage.root == tmp_path


def test_scheme_is_case_insensitive(tmp_path: Path) -> None:
    assert isinstance(open_storage("FILE://" + str(tmp_path)), FileStorage)


def test_memory_url() -> None:
    storage = open_storage("memory://named")
    assert isinstance(storage, MemoryStorage)
    assert storage.url == "memory://named"


@pytest.mark.parametrize("url", ["ftp://x", "s3x://bucket", "dynamodb://table"])
def test_unknown_scheme(url: str) -> None:
    with pytest.raises(UserError) as caught:
        open_storage(url)
    message = str(caught.value)
    assert message == (f"unknown storage URL {url!r}: use one of file:///path, memory://name, "
                       "s3://bucket/prefix")


@pytest.mark.parametrize("url", ["s3:bucket", "memory:name", "file:data"])
def test_scheme_without_slashes_is_not_a_path(url: str) -> None:
    with pytest.raises(UserError, match=f"bad storage URL {url!r}: use one of file:///path"):
        open_storage(url)


@pytest.mark.parametrize("url", ["", "file://"])
def test_no_folder(url: str) -> None:
    with pytest.raises(UserError):
        open_storage(url)


def test_error_lists_every_registered_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BACKENDS, "gcs", Backend("framefarm.storage.gcs", "GcsStorage", "gcp",
                                                 "gs://bucket/prefix"))
    with pytest.raises(UserError, match="file:///path, memory://name, s3://bucket/prefix, gs://"):
        open_storage("gs://bucket")


def test_missing_extra_gives_the_pip_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # A backend module whose SDK is not installed: the import fails on a third-party name.
    monkeypatch.setitem(BACKENDS, "fake", Backend("no_such_sdk_for_framefarm", "Fake", "aws",
                                                  "fake://x"))
    with pytest.raises(MissingExtraError, match=r"pip install 'framefarm\[aws\]'"):
        open_storage("fake://x")


@pytest.mark.parametrize(("url", "parts"), [
    ("file:///a/b", ("file", "/a/b")),
    ("S3://bucket/p", ("s3", "bucket/p")),
    ("memory://", ("memory", "")),
    ("/plain/path", ("", "/plain/path")),
    ("C:\\data", ("", "C:\\data")),
])
def test_split_url(url: str, parts: tuple[str, str]) -> None:
    assert split_url(url) == parts
