"""The OpenTelemetry SDK's parts for framefarm, imported only once an entry point turns tracing
on (`framefarm._otel.setup`): with tracing off a job never pays for importing the SDK.

Spans are buffered in the thread that ends them and exported in batches, with no exporter
thread: the local runner forks its workers, and a fork must not copy a thread holding a lock.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.aws import AwsXRayPropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.extension.aws.trace import AwsXRayIdGenerator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from framefarm import config
from framefarm.errors import UserError

EXPORT_BATCH = 512
"""Spans sent to the exporter at once (the SDK's BatchSpanProcessor default)."""
EXPORT_TIMEOUT = 3.0
"""Seconds an OTLP export may take, retries included, unless OTEL_EXPORTER_OTLP_TIMEOUT says."""

_log = logging.getLogger(__name__)


class _Spans(SpanProcessor):
    """Keeps every finished span of this process until its job stores them with the run, and
    hands them to the exporter in batches, in the thread that ended them."""

    def __init__(self, exporter: SpanExporter | None) -> None:
        self._lock = threading.Lock()
        self._kept: list[ReadableSpan] = []
        self._unsent: list[ReadableSpan] = []
        self.exporter = exporter

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        batch = None
        with self._lock:
            self._kept.append(span)
            if self.exporter is not None:
                self._unsent.append(span)
                if len(self._unsent) >= EXPORT_BATCH:
                    batch, self._unsent = self._unsent, []
        if batch:
            self._send(batch)

    def take(self, trace_id: int) -> list[ReadableSpan]:
        """Remove and return the kept spans of one trace."""
        with self._lock:
            mine = [s for s in self._kept if s.context.trace_id == trace_id]
            self._kept = [s for s in self._kept if s.context.trace_id != trace_id]
        return mine

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        with self._lock:
            batch, self._unsent = self._unsent, []
        if batch:
            self._send(batch)
        return True

    def shutdown(self) -> None:
        self.force_flush()
        if self.exporter is not None:
            self.exporter.shutdown()

    def after_fork(self) -> None:
        """In a forked child: drop the parent's spans; the exporter starts afresh (a fresh
        connection: the parent's would be shared)."""
        self._lock = threading.Lock()
        self._kept, self._unsent = [], []
        if self.exporter is not None:
            self.exporter = _exporter(os.environ)

    def _send(self, batch: Sequence[ReadableSpan]) -> None:
        exporter = self.exporter
        if exporter is None:
            return
        try:
            ok = exporter.export(batch) == SpanExportResult.SUCCESS
        except Exception as exc:  # an exporter must never fail a render
            _log.warning("framefarm: exporting spans failed: %s", exc)
            ok = False
        if not ok:
            # Stop here rather than stall every later batch on a collector that is down.
            where = getattr(exporter, "_endpoint", "") or type(exporter).__name__
            print(f"framefarm: could not export spans to {where} (is the collector running?); "
                  "this process sends no more (the run keeps its own trace)", file=sys.stderr)
            self.exporter = None
            exporter.shutdown()


class _RunsOnly(Sampler):
    """A new trace starts only at a run or a job: a call outside any run (the CLI reading a
    stack's outputs, say) makes no one-span trace of its own. Spans with a parent follow it."""

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str,
                      kind: Any = None, attributes: Any = None, links: Any = None,
                      trace_state: Any = None) -> SamplingResult:
        if name == "run" or (attributes and "framefarm.run_id" in attributes):
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        return SamplingResult(Decision.DROP)

    def get_description(self) -> str:
        return "framefarm runs only"


def install(env: Mapping[str, str]) -> _Spans:
    """Make framefarm's tracer provider the global one; returns its span buffer."""
    spans = _Spans(_exporter(env))
    provider = TracerProvider(resource=_resource(env), id_generator=AwsXRayIdGenerator(),
                              sampler=ParentBased(root=_RunsOnly()))
    provider.add_span_processor(spans)
    trace.set_tracer_provider(provider)
    propagate.set_global_textmap(CompositePropagator([TraceContextTextMapPropagator(),
                                                      AwsXRayPropagator()]))
    os.register_at_fork(after_in_child=spans.after_fork)
    return spans


def _resource(env: Mapping[str, str]) -> Resource:
    attributes: dict[str, Any] = {"host.name": socket.gethostname()}
    named = (env.get(config.OTEL_SERVICE_NAME)
             or "service.name=" in env.get(config.OTEL_RESOURCE_ATTRIBUTES, ""))
    if not named:
        attributes["service.name"] = "framefarm"
    return Resource.create(attributes)


def _exporter(env: Mapping[str, str]) -> SpanExporter | None:
    names = [n.strip().lower() for n in env.get(config.OTEL_TRACES_EXPORTER, "").split(",") if n.strip()]
    if not names:
        endpoint = env.get(config.OTEL_TRACES_ENDPOINT) or env.get(config.OTEL_ENDPOINT)
        names = ["otlp"] if endpoint else ["none"]
    unknown = [n for n in names if n not in ("otlp", "console", "none")]
    if unknown or len(names) > 1:
        raise UserError(f"OTEL_TRACES_EXPORTER={env.get(config.OTEL_TRACES_EXPORTER)!r}: framefarm "
                        "exports to one of otlp, console or none; set it to one of those")
    if names[0] == "none":
        return None
    if names[0] == "console":
        return ConsoleSpanExporter(out=sys.stderr)
    return _otlp(env)


def _otlp(env: Mapping[str, str]) -> SpanExporter:
    protocol = (env.get(config.OTEL_TRACES_PROTOCOL)
                or env.get(config.OTEL_PROTOCOL) or "http/protobuf").strip().lower()
    if protocol == "http/protobuf":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise UserError("OTEL_TRACES_EXPORTER=otlp needs the OTLP exporter: "
                            "pip install 'framefarm[otel]'") from None
        # A collector that is down costs a job at most this long, once (see _Spans._send);
        # the exporter's own messages give way to that one line.
        logging.getLogger("opentelemetry.exporter.otlp").setLevel(logging.CRITICAL)
        return OTLPSpanExporter(endpoint=_endpoint(env, "/v1/traces"),
                                timeout=None if _timeout_set(env) else EXPORT_TIMEOUT)
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcSpanExporter,
            )
        except ImportError:
            raise UserError("OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the gRPC exporter: "
                            "pip install opentelemetry-exporter-otlp-proto-grpc") from None
        return GrpcSpanExporter(  # type: ignore[no-any-return]
            endpoint=_endpoint(env, ""), timeout=None if _timeout_set(env) else EXPORT_TIMEOUT)
    raise UserError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use http/protobuf (the default) "
                    "or grpc")


def _endpoint(env: Mapping[str, str], path: str) -> str | None:
    """Where to send spans, from the mapping given (the exporter would read os.environ):
    ``…_TRACES_ENDPOINT`` as it is, else ``OTEL_EXPORTER_OTLP_ENDPOINT`` plus the signal's path."""
    if env.get(config.OTEL_TRACES_ENDPOINT):
        return env[config.OTEL_TRACES_ENDPOINT]
    base = env.get(config.OTEL_ENDPOINT, "")
    return base.rstrip("/") + path if base else None


def _timeout_set(env: Mapping[str, str]) -> bool:
    return bool(env.get(config.OTEL_TRACES_TIMEOUT) or env.get(config.OTEL_TIMEOUT))


def to_dict(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as one line of `trace.jsonl` (the format in framefarm.tracing)."""
    context = span.context
    parent = span.parent
    return {
        "trace_id": trace.format_trace_id(context.trace_id),
        "span_id": trace.format_span_id(context.span_id),
        "parent_id": trace.format_span_id(parent.span_id) if parent is not None else None,
        "name": span.name,
        "kind": span.kind.name,
        "start": (span.start_time or 0) / 1e9,
        "end": (span.end_time or 0) / 1e9,
        "status": span.status.status_code.name,
        "attributes": _json_safe(dict(span.attributes or {})),
        "resource": _json_safe({k: v for k, v in span.resource.attributes.items()
                                if k in ("service.name", "host.name")}),
    }


def _json_safe(values: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


