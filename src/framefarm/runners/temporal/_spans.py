"""A worker's Temporal spans, kept with the run they belong to.

temporalio.contrib.opentelemetry's interceptor carries the trace context in Temporal headers and
makes spans as a run moves through a worker (RunWorkflow, StartActivity, RunActivity,
CompleteWorkflow …), all in the run's trace. A worker is a long-lived process serving many runs,
so those spans are stored under each run (`runs/RUN/trace/temporal-*.jsonl`, beside the jobs'
own) after each of its activities and every few seconds, and a run is forgotten a day after it
was last seen: nothing piles up in a worker, and `framefarm trace` sees Temporal's part.

The worker learns each run's storage and trace from the inputs of its activities and workflows
(the job contract's FRAMEFARM_STORAGE and TRACEPARENT).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import socket
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from temporalio import workflow
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from framefarm import _otel, config, tracing
from framefarm.storage import Storage, open_storage

STORE_EVERY = 2.0
"""Seconds between stores of the spans a worker made meanwhile."""
FORGET_AFTER = 24 * 3600.0
"""Seconds after it was last seen here (a workflow task starting it, an activity) that a run's
spans are no longer looked for: longer than a run lasts, since a worker that only runs its
workflow tasks does not see it again."""
_NOTE_RUN = "framefarm_note_run"


class RunSpans:
    """The runs this worker process has seen, and the storing of their spans."""

    def __init__(self) -> None:
        self._runs: dict[str, tuple[str, str, float]] = {}  # trace id -> storage, run, last seen
        self._storages: dict[str, Storage] = {}
        self._parts = itertools.count()
        self._name = f"temporal-{socket.gethostname()}-{os.getpid()}"
        self._wake: asyncio.Event | None = None

    def note(self, env: Mapping[str, str]) -> None:
        """A workflow or activity of the run whose job contract is `env` runs here."""
        context = tracing.context_from_env(env)
        run_id, storage = env.get(config.RUN_ID, ""), env.get(config.STORAGE, "")
        if context is None or not run_id or not storage or not _otel.active():
            return
        trace_id = trace.format_trace_id(trace.get_current_span(context).get_span_context().trace_id)
        self._runs[trace_id] = (storage, run_id, time.monotonic())

    def wake(self) -> None:
        """Store soon (an activity ended: its RunActivity span is complete)."""
        if self._wake is not None:
            self._wake.set()

    def store(self) -> None:
        """Store each known run's spans made here since the last time; forget quiet runs."""
        now = time.monotonic()
        for trace_id, (url, run_id, seen) in list(self._runs.items()):
            storage = self._storages.get(url) or self._storages.setdefault(url, open_storage(url))
            _otel.finish_job(storage, run_id, trace_id=trace_id,
                             name=f"{self._name}-{next(self._parts)}")
            if now - seen > FORGET_AFTER:
                del self._runs[trace_id]

    async def keep_storing(self) -> None:
        """Store every STORE_EVERY seconds, and soon after each activity, until cancelled."""
        self._wake = asyncio.Event()
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=STORE_EVERY)
                self._wake.clear()
                await asyncio.to_thread(self.store)
        finally:
            self.store()


class RunSpansInterceptor(Interceptor):
    """Tells `spans` about each run this worker serves; goes before the tracing interceptor."""

    def __init__(self, spans: RunSpans) -> None:
        self.spans = spans

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Activity(next, self.spans)

    def workflow_interceptor_class(
            self, input: WorkflowInterceptorClassInput) -> type[WorkflowInboundInterceptor]:
        input.unsafe_extern_functions[_NOTE_RUN] = self.spans.note
        return _Workflow


def _unsampled() -> Context:
    """A context whose span is not sampled, so the spans started under it are not recorded."""
    parent = trace.SpanContext(trace_id=random.getrandbits(128) or 1,
                               span_id=random.getrandbits(64) or 1, is_remote=True,
                               trace_flags=trace.TraceFlags(trace.TraceFlags.DEFAULT))
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


def _env_of(args: Any) -> Mapping[str, str] | None:
    """The job contract in a workflow's or activity's one dataclass argument."""
    first = args[0] if args else None
    env = getattr(first, "env", None) or getattr(getattr(first, "run", None), "env", None)
    return env if isinstance(env, Mapping) else None


class _Activity(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, spans: RunSpans) -> None:
        super().__init__(next)
        self.spans = spans

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        env = _env_of(input.args)
        if env:
            self.spans.note(env)
        # RunActivity joins the run's trace, also when the workflow was started without a trace
        # header. A run started untraced (no TRACEPARENT) leaves no span here: nobody would
        # ever store it.
        context = (tracing.context_from_env(env) if env else None) or _unsampled()
        token = otel_context.attach(context)
        try:
            return await self.next.execute_activity(input)
        finally:
            otel_context.detach(token)
            self.spans.wake()


class _Workflow(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        env = _env_of(input.args)
        if env:
            workflow.extern_functions()[_NOTE_RUN](dict(env))
        return await self.next.execute_workflow(input)
