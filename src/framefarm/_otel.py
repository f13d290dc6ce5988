"""The OpenTelemetry SDK, set up by framefarm's entry points only (`framefarm render`,
`framefarm job`, the local runner's workers), from the standard variables:

- ``OTEL_TRACES_EXPORTER``: ``otlp``, ``console`` (to stderr) or ``none``. Unset, it is ``otlp``
  when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``…_TRACES_ENDPOINT``) is set, else ``none``: with
  nothing configured, framefarm prints and sends nothing.
- ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``http/protobuf``, the
  default, or ``grpc``), ``OTEL_EXPORTER_OTLP_HEADERS`` …: read by the OTLP exporter itself.
- ``OTEL_SERVICE_NAME`` (default ``framefarm``), ``OTEL_RESOURCE_ATTRIBUTES``,
  ``OTEL_SDK_DISABLED``. Every run is traced whole (sample at the collector, if at all): a trace
  starts only at a run or a job, and every span follows its parent's decision.

Trace and span ids come from the X-Ray id generator (the trace id starts with the time), so a
trace opens in AWS X-Ray through a collector as well as in any OTLP backend.

The SDK itself (`framefarm._otel_sdk`) is imported only when tracing is on. A job ends with
`finish_job`, which stores the job's spans with the run and flushes the export.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from framefarm import config, tracing

if TYPE_CHECKING:
    from framefarm.storage import Storage

_state: dict[str, Any] = {}


def setup(environ: Mapping[str, str] | None = None) -> bool:
    """Install framefarm's tracer provider in this process (once); False when tracing is off
    (``OTEL_SDK_DISABLED=true``). A bad setting is a UserError naming it."""
    env = os.environ if environ is None else environ
    if "spans" in _state:
        return True
    if env.get(config.OTEL_SDK_DISABLED, "").strip().lower() == "true":
        return False
    from framefarm import _otel_sdk

    _state["spans"] = _otel_sdk.install(env)
    return True


def active() -> bool:
    """True when this process set up tracing (or inherited it through a fork)."""
    return "spans" in _state


def instrument_botocore() -> None:
    """Trace AWS calls (once per process, when tracing is on and the instrumentation is
    installed): each S3 or DynamoDB request becomes a client span."""
    if not active() or "botocore" in _state:
        return
    _state["botocore"] = True
    try:
        from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    except ImportError:  # the aws extra brings it; without it AWS calls go untraced
        return
    BotocoreInstrumentor().instrument()  # type: ignore[no-untyped-call]


# -- the run's own copy ---------------------------------------------------------------------------

def finish_job(storage: Storage, run_id: str, *, trace_id: str, name: str,
               merge: bool = False) -> None:
    """A job ended: store this process's spans of its trace under the run (merged into
    `trace.jsonl` when `merge`), then flush the export. Never fails the job."""
    spans = _state.get("spans")
    if spans is None or not trace_id:
        return
    try:
        mine = spans.take(int(trace_id, 16))
        with tracing.untraced():
            if mine:
                from framefarm._otel_sdk import to_dict

                body = "".join(json.dumps(to_dict(s), separators=(",", ":")) + "\n" for s in mine)
                storage.put_bytes(f"{tracing.trace_prefix(run_id)}{name}.jsonl", body.encode())
            if merge:
                from framefarm.trace_store import merge_spans

                merge_spans(storage, run_id)
    except Exception as exc:  # the trace is a record of the run, not part of its result
        print(f"framefarm: could not store the trace of run {run_id}: {exc}", file=sys.stderr)
    spans.force_flush()
