"""The job log in a DynamoDB table: `dynamodb://table` (the stack's JobLogUrl output).

Item design (the table is deploy/cloudformation.yaml's JobLogTable):

    pk            sk                    what
    RUN#{run_id}  RUN                   the run: plan, output, runner ids (as JSON in `record`)
    RUN#{run_id}  JOB#{job}#{attempt}   one job attempt; every JobRecord field as an attribute
    RUN#{run_id}  LEASE                 who drives the run: token, host, pid, since, expires_at

One Query on a run's partition reads the run and every attempt of its jobs (job is `plan`,
`render:{i}` or `encode`; the attempt has five digits, so attempts sort in order). Run items
also carry `entity = "run"` and `created_at`, the keys of the sparse `runs` index, which lists
runs newest first without a Scan (an index is eventually consistent: a run written a moment ago
may be missing from `runs()`, never from `get_run` or `jobs`, which read consistently). With
a TTL (`?ttl_days=N` or FRAMEFARM_JOBLOG_TTL_DAYS) each item gets `expires_at` in epoch seconds,
and DynamoDB deletes it after that.

Writes are conditional, so no update is lost: a new attempt is put only if that attempt does
not exist yet, and a status change is applied only if the stored status is one it may move on
from — the check and the write are one request.

An item holds at most 400 KB. A run item stays small at any size of video: its plan derives the
chunks from `total_frames` and `frames_per_job` instead of listing them (about 0.5 KB for a
million frames). A job's `error` (a traceback) is cut to its last ERROR_LIMIT bytes, so a huge
one cannot make the FAILED update itself fail and leave the attempt RUNNING.

Faults: botocore retries throttling and server errors itself (framefarm._aws: adaptive mode,
MAX_ATTEMPTS in all); one that outlasts those retries, or a DynamoDB that cannot be reached, is a
TransientError (exit 1: a later retry may pass); a missing table or refused credentials are a
UserError (exit 2). Each is one line naming the job log and the cause.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, NoReturn
from urllib.parse import parse_qs

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ConnectionError as BotocoreConnectionError
from botocore.exceptions import HTTPClientError

from framefarm import _aws, config
from framefarm.errors import TransientError, UserError
from framefarm.joblog._base import JobLog
from framefarm.model import JobRecord, Lease, RunRecord

RUNS_INDEX = "runs"
ERROR_LIMIT = 100_000
"""Bytes of a job's error text kept: the end, where the exception is."""
_FIELDS = frozenset(f.name for f in fields(JobRecord))
_THROTTLED = frozenset({"ProvisionedThroughputExceededException", "ThrottlingException",
                        "RequestLimitExceeded"})
_UNAVAILABLE = frozenset({"InternalServerError", "ServiceUnavailable", "InternalFailure",
                          "ServiceUnavailableException"})
_NO_TIME = "0"
"""The `runs` index sort key of a run recorded without a creation time (sorts oldest)."""

_serialize = TypeSerializer().serialize
_deserialize = TypeDeserializer().deserialize


def _pk(run_id: str) -> str:
    return f"RUN#{run_id}"


def _job_sk(job: str, attempt: int) -> str:
    return f"JOB#{job}#{attempt:05d}"


class DynamoDBJobLog(JobLog):
    """Runs and job attempts as items of one DynamoDB table."""

    reach = "anywhere"  # any machine with credentials for the table

    def __init__(self, table: str, *, ttl_days: float = 0.0) -> None:
        if not table:
            raise UserError("no DynamoDB table named: use dynamodb://TABLE")
        if ttl_days < 0:
            raise UserError(f"job log TTL of {ttl_days} days: use 0 (keep items) or more")
        self.table = table
        self.ttl_days = ttl_days
        self.url = f"dynamodb://{table}" + (f"?ttl_days={ttl_days:g}" if ttl_days else "")

    @classmethod
    def from_url(cls, url: str) -> DynamoDBJobLog:
        """`dynamodb://table`, optionally `?ttl_days=N` (else FRAMEFARM_JOBLOG_TTL_DAYS)."""
        rest = url.split("://", 1)[1] if "://" in url else ""
        table, _, query = rest.partition("?")
        table = table.strip("/")
        if not table or "/" in table:
            raise UserError(f"job log URL {url!r} names no table: use dynamodb://TABLE")
        given = parse_qs(query).get("ttl_days", [os.environ.get(config.JOBLOG_TTL_DAYS, "")])[-1]
        try:
            ttl_days = float(given) if given.strip() else 0.0
        except ValueError:
            raise UserError(f"job log TTL {given!r} is not a number of days: use e.g. "
                            f"?ttl_days=90 or {config.JOBLOG_TTL_DAYS}=90") from None
        return cls(table, ttl_days=ttl_days)

    def __repr__(self) -> str:
        return f"DynamoDBJobLog({self.table!r}, ttl_days={self.ttl_days})"

    def __reduce__(self) -> tuple[object, ...]:
        return (_reopen, (self.table, self.ttl_days))  # the client is made anew where it lands

    @property
    def _db(self) -> Any:
        return _aws.client("dynamodb")

    def _expiry(self) -> dict[str, Any]:
        if not self.ttl_days:
            return {}
        return {"expires_at": {"N": str(int(time.time() + self.ttl_days * 86400))}}

    def _fail(self, exc: Exception) -> NoReturn:
        code = _aws.error_code(exc)
        if code == "ResourceNotFoundException":
            raise UserError(f"DynamoDB table {self.table!r} does not exist ({self.url}): deploy "
                            "deploy/cloudformation.yaml (its JobLogUrl output names the table) "
                            f"and set {config.JOBLOG}") from None
        if code in ("AccessDeniedException", "UnrecognizedClientException",
                    "InvalidSignatureException", "ExpiredTokenException"):
            raise UserError(f"DynamoDB refused access to {self.url} ({code}): check the AWS "
                            f"credentials and their policy, or set {config.JOBLOG}") from None
        attempts = f"after {_aws.MAX_ATTEMPTS} attempts"
        if code in _THROTTLED:
            raise TransientError(f"DynamoDB throttled the job log {self.url} ({code}) {attempts}: "
                                 "try again later, or give the table more capacity") from None
        if code in _UNAVAILABLE:
            raise TransientError(f"DynamoDB failed on the job log {self.url} ({code}) {attempts}: "
                                 "try again later") from None
        if isinstance(exc, (BotocoreConnectionError, HTTPClientError)):
            reason = " ".join(str(exc).split())  # one line
            raise TransientError(f"cannot reach DynamoDB for the job log {self.url} ({reason}) "
                                 f"{attempts}: check the network (and AWS_ENDPOINT_URL if set), "
                                 "then try again") from None
        raise exc

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._db, operation)(TableName=self.table, **kwargs)
        except Exception as exc:
            if _aws.error_code(exc) == "ConditionalCheckFailedException":
                raise
            self._fail(exc)

    def _query(self, **kwargs: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = self._call("query", **kwargs)
            items += page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # -- runs ---------------------------------------------------------------------------------

    def _put_run(self, run: RunRecord) -> None:
        self._call("put_item", Item=self._run_item(run))

    def _run_item(self, run: RunRecord) -> dict[str, Any]:
        return {"pk": {"S": _pk(run.run_id)}, "sk": {"S": "RUN"}, "entity": {"S": "run"},
                "created_at": {"S": run.created_at or _NO_TIME},
                "record": {"S": _record_json(run)}, **self._expiry()}

    def _swap_run(self, run: RunRecord, *, expect: RunRecord | None) -> bool:
        if expect is None:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:  # the record attribute is the whole record: compare it, then swap
            condition = {"ConditionExpression": "#record = :expect",
                         "ExpressionAttributeNames": {"#record": "record"},
                         "ExpressionAttributeValues": {":expect": {"S": _record_json(expect)}}}
        try:
            self._call("put_item", Item=self._run_item(run), **condition)
        except Exception as exc:
            if _aws.error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _get_run(self, run_id: str) -> RunRecord | None:
        found = self._call("get_item", Key={"pk": {"S": _pk(run_id)}, "sk": {"S": "RUN"}},
                           ConsistentRead=True).get("Item")
        return _run(found) if found else None

    def _list_runs(self) -> list[RunRecord]:
        items = self._query(IndexName=RUNS_INDEX, KeyConditionExpression="entity = :run",
                            ExpressionAttributeValues={":run": {"S": "run"}},
                            ScanIndexForward=False)
        return [_run(item) for item in items]

    # -- jobs ---------------------------------------------------------------------------------

    def _insert_job(self, record: JobRecord) -> bool:
        item = {"pk": {"S": _pk(record.run_id)}, "sk": {"S": _job_sk(record.job, record.attempt)},
                **_attributes(record.to_dict()), **self._expiry()}
        try:
            self._call("put_item", Item=item, ConditionExpression="attribute_not_exists(pk)")
        except Exception as exc:
            if _aws.error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _update_job(self, run_id: str, job: str, attempt: int, changes: Mapping[str, Any],
                    allowed_from: frozenset[str]) -> JobRecord | None:
        names: dict[str, str] = {"#status": "status"}
        values: dict[str, Any] = {}
        sets: list[str] = []
        for i, (name, value) in enumerate(_attributes(changes).items()):
            names[f"#f{i}"] = name
            values[f":v{i}"] = value
            sets.append(f"#f{i} = :v{i}")
        statuses = sorted(allowed_from)
        if not statuses:
            return None  # no stored status may make this change
        for i, status in enumerate(statuses):
            values[f":s{i}"] = {"S": status}
        condition = (f"attribute_exists(pk) AND #status IN "
                     f"({', '.join(f':s{i}' for i in range(len(statuses)))})")
        # With nothing to change, a write of the status to itself still checks the condition.
        update = "SET " + (", ".join(sets) if sets else "#status = #status")
        try:
            done = self._call("update_item",
                              Key={"pk": {"S": _pk(run_id)}, "sk": {"S": _job_sk(job, attempt)}},
                              UpdateExpression=update, ConditionExpression=condition,
                              ExpressionAttributeNames=names, ExpressionAttributeValues=values,
                              ReturnValues="ALL_NEW")
        except Exception as exc:
            if _aws.error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise
        return _job(done["Attributes"])

    def _get_job(self, run_id: str, job: str, attempt: int) -> JobRecord | None:
        found = self._call("get_item", Key={"pk": {"S": _pk(run_id)}, "sk": {"S": _job_sk(job, attempt)}},
                           ConsistentRead=True).get("Item")
        return _job(found) if found else None

    def _jobs(self, run_id: str) -> list[JobRecord]:
        items = self._query(KeyConditionExpression="pk = :pk AND begins_with(sk, :job)",
                            ExpressionAttributeValues={":pk": {"S": _pk(run_id)},
                                                       ":job": {"S": "JOB#"}},
                            ConsistentRead=True)
        return [_job(item) for item in items]

    def _attempts(self, run_id: str, job: str) -> list[JobRecord]:
        prefix = _job_sk(job, 0).rsplit("#", 1)[0] + "#"  # JOB#render:1# (not render:10)
        items = self._query(KeyConditionExpression="pk = :pk AND begins_with(sk, :job)",
                            ExpressionAttributeValues={":pk": {"S": _pk(run_id)},
                                                       ":job": {"S": prefix}},
                            ConsistentRead=True)
        return [_job(item) for item in items]

    # -- the run's lease ------------------------------------------------------------------------

    def _lease_key(self, run_id: str) -> dict[str, Any]:
        return {"pk": {"S": _pk(run_id)}, "sk": {"S": "LEASE"}}

    def _get_lease(self, run_id: str) -> Lease | None:
        found = self._call("get_item", Key=self._lease_key(run_id), ConsistentRead=True).get("Item")
        if not found:
            return None
        return Lease(run_id=run_id, token=found["token"]["S"], host=found["host"]["S"],
                     pid=int(found["pid"]["N"]), since=found["since"]["S"],
                     expires_at=float(found["expires_at_epoch"]["N"]))

    def _swap_lease(self, run_id: str, lease: Lease, *, expect: str | None) -> bool:
        item = {**self._lease_key(run_id), "token": {"S": lease.token}, "host": {"S": lease.host},
                "pid": {"N": str(lease.pid)}, "since": {"S": lease.since},
                "expires_at_epoch": {"N": repr(lease.expires_at)}, **self._expiry()}
        if expect is None:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            condition = {"ConditionExpression": "#token = :expect",
                         "ExpressionAttributeNames": {"#token": "token"},
                         "ExpressionAttributeValues": {":expect": {"S": expect}}}
        try:
            self._call("put_item", Item=item, **condition)
        except Exception as exc:
            if _aws.error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _drop_lease(self, run_id: str, token: str) -> None:
        try:
            self._call("delete_item", Key=self._lease_key(run_id),
                       ConditionExpression="#token = :token",
                       ExpressionAttributeNames={"#token": "token"},
                       ExpressionAttributeValues={":token": {"S": token}})
        except Exception as exc:
            if _aws.error_code(exc) != "ConditionalCheckFailedException":
                raise


def _reopen(table: str, ttl_days: float) -> DynamoDBJobLog:
    return DynamoDBJobLog(table, ttl_days=ttl_days)


def _attributes(data: Mapping[str, Any]) -> dict[str, Any]:
    """JobRecord fields as DynamoDB attribute values; TypeError on a field it does not have."""
    unknown = set(data) - _FIELDS
    if unknown:
        raise TypeError(f"job records have no field {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for name, value in data.items():
        if name == "outputs":
            value = [str(v) for v in value]
        elif name == "error":
            value = _cut(value)
        out[name] = _serialize(value)  # None (a job without an index) is stored as NULL
    return out


def _cut(error: str) -> str:
    """`error`, or its last ERROR_LIMIT bytes after a line that says it was cut."""
    data = error.encode()
    if len(data) <= ERROR_LIMIT:
        return error
    tail = data[-ERROR_LIMIT:].decode(errors="ignore")  # a split character is dropped
    return f"[error cut to its last {ERROR_LIMIT} bytes of {len(data)}]\n{tail}"


def _job(item: Mapping[str, Any]) -> JobRecord:
    data = {name: _deserialize(value) for name, value in item.items() if name in _FIELDS}
    for name in ("index", "attempt", "frames", "bytes", "exit_code"):
        if data.get(name) is not None:
            data[name] = int(data[name])  # numbers come back as Decimal
    data["outputs"] = tuple(data.get("outputs") or ())
    return JobRecord(**data)


def _record_json(run: RunRecord) -> str:
    """The run item's `record` attribute: the record as JSON, keys sorted (one text per record,
    so a record read back and written again is the same text)."""
    return json.dumps(run.to_dict(), sort_keys=True)


def _run(item: Mapping[str, Any]) -> RunRecord:
    return RunRecord.from_dict(json.loads(item["record"]["S"]))
