"""Tracing over the OpenTelemetry API: the spans framefarm makes, the trace context that crosses
every process and container boundary, and the run's own copy of its spans in storage.

Only the API is used here; the SDK is set up by the entry points (`framefarm._otel.setup`), so a
program that imports framefarm as a library keeps its own tracing.

Spans of a run, all in one trace::

    run                    the CLI's root span            framefarm.run_id, framefarm.runner
      plan | render | encode   one per job attempt        framefarm.run_id, framefarm.job,
                                                           framefarm.attempt, host.name; render:
                                                           framefarm.chunk, framefarm.frame_start,
                                                           framefarm.frame_stop
        frame              one per frame of a render job  framefarm.frame,
                                                           framefarm.render_seconds,
                                                           framefarm.encode_seconds
        flush              a render job's encoder draining its look-ahead (encode time)
        concat, verify     the encode job's two phases
        storage.OP         a Storage call                 framefarm.storage.key (.prefix)
        joblog.OP          a JobLog call
          S3.PutObject …   botocore's spans (AWS calls)

The context crosses a boundary as the job contract's `TRACEPARENT` (W3C) and `_X_AMZN_TRACE_ID`
(X-Ray) variables. Each job stores its spans as JSON lines under `runs/{run}/trace/`; the last
job (and the CLI) merges them into `runs/{run}/trace.jsonl` (framefarm.trace_store), one span per
line::

    {"trace_id": "<32 hex>", "span_id": "<16 hex>", "parent_id": "<16 hex>" | null,
     "name": "render", "kind": "INTERNAL", "start": <unix seconds>, "end": <unix seconds>,
     "status": "UNSET" | "OK" | "ERROR", "attributes": {...}, "resource": {...}}
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context
from opentelemetry.propagators.aws import AwsXRayPropagator
from opentelemetry.propagators.aws.aws_xray_propagator import TRACE_HEADER_KEY
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from framefarm import config

__all__ = [
    "context_env", "context_from_env", "current_trace_id", "job_span", "span", "trace_key",
    "trace_prefix", "traced",
]

TRACER_NAME = "framefarm"
_W3C = TraceContextTextMapPropagator()
_XRAY = AwsXRayPropagator()


def tracer() -> trace.Tracer:
    """framefarm's tracer from the global provider (a no-op one until an entry point sets it)."""
    return trace.get_tracer(TRACER_NAME)


@contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Span]:
    """A child span of the current one around the `with` block."""
    with tracer().start_as_current_span(name, attributes=attributes) as current:
        yield current


P = ParamSpec("P")
R = TypeVar("R")


def traced(name: str, *, key: str = "") -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a method so each call inside a traced job is a span `name`; with `key`, the
    call's first argument (after self) is recorded as that attribute (a storage key, say)."""

    def decorate(method: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(method)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if not trace.get_current_span().get_span_context().is_valid:
                return method(*args, **kwargs)  # only inside a run: no stray one-span traces
            attributes = {key: args[1]} if key and len(args) > 1 and isinstance(args[1], str) else None
            with tracer().start_as_current_span(name, attributes=attributes):
                return method(*args, **kwargs)

        return wrapper

    return decorate


@contextmanager
def untraced() -> Iterator[None]:
    """No spans in the block, neither framefarm's nor instrumentations' (botocore's): for the
    bookkeeping that stores a trace, after its spans have ended."""
    quiet = otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True,
                                   trace.set_span_in_context(trace.INVALID_SPAN))
    token = otel_context.attach(quiet)
    try:
        yield
    finally:
        otel_context.detach(token)


def current_span() -> Span:
    """The span of the code that is running (a no-op one when nothing is traced)."""
    return trace.get_current_span()


def current_trace_id() -> str:
    """The current trace's id as 32 hex digits, or '' when nothing is being traced."""
    return span_trace_id(trace.get_current_span())


def span_trace_id(current: Span) -> str:
    """`current`'s trace id as 32 hex digits, or '' for a span that is not traced."""
    context = current.get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else ""


def context_env(context: Context | None = None) -> dict[str, str]:
    """The current span's context (or `context`'s) as job-contract variables: `TRACEPARENT` and
    `_X_AMZN_TRACE_ID`; empty when no span is being traced."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=context)
    _XRAY.inject(carrier, context=context)
    env = {}
    if carrier.get("traceparent"):
        env[config.TRACEPARENT] = carrier["traceparent"]
    if carrier.get(TRACE_HEADER_KEY):
        env[config.XRAY_TRACE_ID] = carrier[TRACE_HEADER_KEY]
    return env


def context_from_env(env: Mapping[str, str]) -> Context | None:
    """The upstream job's context from `TRACEPARENT` (else `_X_AMZN_TRACE_ID`); None if neither
    holds a valid one."""
    candidates = ((_W3C, {"traceparent": env.get(config.TRACEPARENT, "").strip()}),
                  (_XRAY, {TRACE_HEADER_KEY: env.get(config.XRAY_TRACE_ID, "").strip()}))
    for propagator, carrier in candidates:
        if next(iter(carrier.values())):
            context = propagator.extract(carrier)
            if trace.get_current_span(context).get_span_context().is_valid:
                return context
    return None


@contextmanager
def job_span(name: str, *, env: Mapping[str, str],
             attributes: Mapping[str, Any] | None = None) -> Iterator[Span]:
    """The span of one job attempt, a child of the upstream context in `env` (else a new trace).

    The caller marks a failed job with `fail(span, exc)`: a job catches its step's exceptions.
    """
    parent = context_from_env(env)
    with tracer().start_as_current_span(name, context=parent, attributes=attributes,
                                        kind=trace.SpanKind.CONSUMER if parent else
                                        trace.SpanKind.INTERNAL) as current:
        yield current


def fail(current: Span, exc: BaseException, message: str = "") -> None:
    """Mark `current` as failed by `exc`."""
    current.record_exception(exc)
    current.set_status(Status(StatusCode.ERROR, message or f"{type(exc).__name__}: {exc}"[:500]))


# -- the run's own copy of its spans --------------------------------------------------------------

def trace_key(run_id: str) -> str:
    """The run's merged spans: `runs/{run}/trace.jsonl`."""
    return f"runs/{run_id}/trace.jsonl"


def trace_prefix(run_id: str) -> str:
    """Where each job stores its own spans until they are merged."""
    return f"runs/{run_id}/trace/"
