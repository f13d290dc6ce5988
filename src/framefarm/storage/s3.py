"""Storage in an S3 bucket under a prefix: `s3://bucket/prefix`.

A PUT replaces an object whole (a reader sees the old object or the new one), so every write is
atomic; files go up and down through boto3's managed (multipart, parallel) transfer, whose
threads carry the caller's trace context. Downloads land in a temporary file next to the
destination and are renamed over it.

A failed HEAD or GET is ambiguous: a HEAD's 404 has no body to say whether the key or the bucket
is missing, and S3 answers 403 for a missing key to a caller without `s3:ListBucket` on it (the
stack's job role may list only under its prefix). One ListObjectsV2 under the key, made only on
that error path, tells a missing key, a missing bucket and a refusal apart.

A missing bucket is a UserError. Everything else that fails once botocore's retries are spent
is a StorageIOError (exit 1: the job is retried) naming the key and the cause: throttling
(SlowDown, 503), S3's own faults (500), a lost connection, and refusals (AccessDenied, expired
credentials), which can pass while a run goes on (a role's policy still propagating, a session
renewed); `probe()` reports refusals before a run starts as UserErrors.
"""

from __future__ import annotations

import builtins
import contextvars
import errno
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any, NoReturn

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import (
    BotoCoreError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from s3transfer.exceptions import RetriesExceededError
from s3transfer.manager import TransferManager

from framefarm import _aws, config
from framefarm.errors import StorageKeyError, UserError
from framefarm.storage._base import Storage, StorageIOError, atomic_file

EXPIRES_TAG = "framefarm-expires=true"
"""The tag of objects stored with `expires=True`; the stack's lifecycle rule deletes them."""

_NOT_FOUND = frozenset({"NoSuchKey"})
_AMBIGUOUS = frozenset({"404", "NotFound", "403", "Forbidden"})
"""Codes of HEAD requests (no error body) and of S3 hiding a missing key; see the docstring."""
_NO_BUCKET = frozenset({"NoSuchBucket"})
_DENIED = frozenset({"403", "Forbidden", "AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId",
                     "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"})
_BUSY = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                   "TooManyRequestsException", "RequestThrottled", "ServiceUnavailable",
                   "InternalError", "RequestTimeout", "RequestTimeoutException", "OperationAborted",
                   "429", "500", "502", "503", "504"})
"""Codes of a busy or failing S3: a later attempt may succeed (as do all 5xx answers)."""
_FIX_ACCESS = f"check the AWS credentials and the bucket's policy, or set {config.STORAGE}"
_LOCAL_FAULTS = {errno.ENOSPC: "no space left on the disk", errno.EDQUOT: "the disk quota is used up",
                 errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                 errno.EROFS: "read-only file system", errno.EIO: "I/O error"}
"""Faults of the local file a download writes (a full scratch disk): a StorageIOError too."""


class _ContextThreadPool(ThreadPoolExecutor):
    """The transfer's threads run in the submitting thread's context, so its requests stay in
    the job's trace (OpenTelemetry keeps the current span in a context variable)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


def _transfers(client: Any) -> TransferManager:
    """boto3's managed transfer (multipart, parallel), its threads in the caller's context."""
    return TransferManager(client, TransferConfig(), executor_cls=_ContextThreadPool)


class S3Storage(Storage):
    """Objects under `prefix` in `bucket`; keys map to `prefix/key`."""

    reach = "anywhere"  # any machine with credentials for the bucket

    def __init__(self, bucket: str, prefix: str = "") -> None:
        if not bucket or "/" in bucket:
            raise UserError(f"bad S3 bucket name {bucket!r}: use s3://BUCKET/PREFIX")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    @classmethod
    def from_url(cls, url: str) -> S3Storage:
        """`s3://bucket` or `s3://bucket/some/prefix` (a trailing slash is ignored)."""
        rest = url.split("://", 1)[1] if "://" in url else ""
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise UserError(f"storage URL {url!r} names no bucket: use s3://BUCKET/PREFIX")
        return cls(bucket, prefix)

    def __repr__(self) -> str:
        return f"S3Storage({self.bucket!r}, {self.prefix!r})"

    def __reduce__(self) -> tuple[object, ...]:
        return (S3Storage, (self.bucket, self.prefix))  # the client is made anew where it lands

    @property
    def _s3(self) -> Any:
        return _aws.client("s3")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, key: str, exc: Exception, action: str = "read") -> NoReturn:
        """Raise what `exc`, from `action` ('read', 'write' …) on `key`, means to the caller."""
        # A managed download that ran out of retries keeps the last error.
        if isinstance(exc, RetriesExceededError) and isinstance(exc.last_exception, Exception):
            exc = exc.last_exception
        code = _aws.error_code(exc)
        if code in _AMBIGUOUS:
            code = self._explain(key, code)
        if code in _NOT_FOUND:
            raise self._missing(key) from None
        if code in _NO_BUCKET:
            raise UserError(f"S3 bucket {self.bucket!r} does not exist ({self.url}): create it or "
                            f"deploy the stack, and set {config.STORAGE}") from None
        # (a listed prefix is no key: "runs/r/segments/", or "." for everything)
        where = self.url if key == "." else f"{self.url.rstrip('/')}/{key}"
        what = f"cannot {action} {where}"
        if code in _DENIED:
            raise StorageIOError(f"S3 refused access to {self.url} ({code}): {what}; "
                                 f"{_FIX_ACCESS}", url=self.url, cause=f"S3 refused access: {code}",
                                 user_fault=True, fix=_FIX_ACCESS) from None
        if code in _BUSY or _status(exc) >= 500:
            cause = f"S3 answered {code or _status(exc)} after {_aws.MAX_ATTEMPTS} attempts"
            raise StorageIOError(f"{what} ({cause}): a retry may succeed", url=self.url,
                                 cause=cause, fix="a retry may succeed") from None
        if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
            fix = ("configure AWS credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, or the job's role), "
                   f"or set {config.STORAGE}")
            raise StorageIOError(f"{what} ({exc}): {fix}", url=self.url, cause=str(exc),
                                 user_fault=True, fix=fix) from None
        if isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError):
            cause = f"connection failed: {exc}"
            raise StorageIOError(f"{what} ({cause}): a retry may succeed", url=self.url,
                                 cause=cause, fix="a retry may succeed") from None
        raise exc

    def _explain(self, key: str, code: str) -> str:
        """What a bare 404 or a 403 on `key` means: 'NoSuchKey', 'NoSuchBucket', or `code`."""
        try:
            found = self._s3.list_objects_v2(Bucket=self.bucket, Prefix=self._key(key), MaxKeys=1)
        except Exception as exc:
            return _aws.error_code(exc) or code
        listed = [item["Key"] for item in found.get("Contents", [])]
        # A key sorts before every longer key it begins, so one listed key is enough.
        return code if listed == [self._key(key)] else "NoSuchKey"

    # -- primitives ---------------------------------------------------------------------------

    def _put_bytes(self, key: str, data: bytes) -> None:
        try:
            self._s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as exc:
            self._fail(key, exc, "write")

    def _get_bytes(self, key: str) -> bytes:
        try:
            body: bytes = self._s3.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except Exception as exc:
            self._fail(key, exc)
        return body

    def _put_file(self, key: str, path: Path, expires: bool = False) -> None:
        extra = {"Tagging": EXPIRES_TAG} if expires else None
        try:
            with _transfers(self._s3) as transfers:
                transfers.upload(str(path), self.bucket, self._key(key), extra_args=extra).result()
        except Exception as exc:
            if isinstance(exc, OSError) and not isinstance(exc, BotoCoreError):
                raise  # reading the local file failed, not writing to S3
            self._fail(key, exc, "write")

    def _get_file(self, key: str, path: Path) -> None:
        try:
            with atomic_file(path) as f, _transfers(self._s3) as transfers:
                transfers.download(self.bucket, self._key(key), f).result()
        except Exception as exc:
            # botocore's timeouts are OSErrors too; a local one is writing the file that failed.
            if isinstance(exc, OSError) and not isinstance(exc, BotoCoreError):
                if exc.errno not in _LOCAL_FAULTS:
                    raise
                cause = _LOCAL_FAULTS[exc.errno]
                fix = "free space there or check its permissions; a retry may succeed"
                raise StorageIOError(f"cannot copy {self.url_for(key)} to {path} ({cause}): {fix}",
                                     url=self.url, cause=cause, fix=fix) from None
            self._fail(key, exc)

    def _exists(self, key: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            try:
                self._fail(key, exc)
            except StorageKeyError:
                return False
        return True

    def _list(self, prefix: str) -> builtins.list[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        keys: builtins.list[str] = []
        try:
            pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                       Prefix=base + prefix)
            for page in pages:
                keys += [item["Key"][len(base):] for item in page.get("Contents", [])]
        except Exception as exc:
            self._fail(prefix or ".", exc, "list")
        return keys

    def _delete(self, key: str) -> None:
        try:
            self._s3.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            with suppress(StorageKeyError):  # deleting what is not there is no error
                self._fail(key, exc, "delete")


def _status(exc: BaseException) -> int:
    """The HTTP status of a botocore ClientError, else 0."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return 0
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return status if isinstance(status, int) else 0
