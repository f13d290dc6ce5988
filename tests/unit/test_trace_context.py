"""The trace context as job-contract variables, and a run's stored spans (merge, dedupe)."""

from __future__ import annotations

import json
import time

import pytest
from opentelemetry import trace
from opentelemetry.sdk.extension.aws.trace import AwsXRayIdGenerator
from opentelemetry.sdk.trace import TracerProvider

from framefarm import config, trace_store, tracing
from framefarm.storage import open_storage


@pytest.fixture
def tracer() -> trace.Tracer:
    """An SDK tracer of its own (the process-wide provider stays untouched)."""
    return TracerProvider(id_generator=AwsXRayIdGenerator()).get_tracer("test")


def test_the_context_crosses_as_traceparent_and_x_ray_header(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("upstream") as upstream:
        env = tracing.context_env()
        assert tracing.current_trace_id() == f"{upstream.get_span_context().trace_id:032x}"
    ids = upstream.get_span_context()
    trace_hex, span_hex = f"{ids.trace_id:032x}", f"{ids.span_id:016x}"
    assert env[config.TRACEPARENT] == f"00-{trace_hex}-{span_hex}-01"
    assert env[config.XRAY_TRACE_ID] == (f"Root=1-{trace_hex[:8]}-{trace_hex[8:]};"
                                         f"Parent={span_hex};Sampled=1")
    assert abs(int(trace_hex[:8], 16) - time.time()) < 5  # X-Ray: the id starts with the time
    for only in (config.TRACEPARENT, config.XRAY_TRACE_ID):
        context = tracing.context_from_env({only: env[only]})
        assert context is not None
        with tracer.start_as_current_span("job", context=context) as job:
            assert job.get_span_context().trace_id == ids.trace_id
            assert job.parent is not None and job.parent.span_id == ids.span_id


@pytest.mark.parametrize("env", [{}, {config.TRACEPARENT: "00-zz-yy-01"},
                                 {config.TRACEPARENT: "00-" + "0" * 32 + "-" + "1" * 16 + "-01"},
                                 {config.XRAY_TRACE_ID: "Root=nonsense"}])
def test_no_or_an_unreadable_context_means_a_new_trace(env: dict[str, str]) -> None:
    assert tracing.context_from_env(env) is None


def test_outside_any_span_there_is_no_context_to_pass_on() -> None:
    assert tracing.context_env() == {}
    assert tracing.current_trace_id() == ""


def _span(span_id: str, start: float, name: str = "render") -> dict[str, object]:
    return {"trace_id": "a" * 32, "span_id": span_id, "parent_id": None, "name": name,
            "kind": "INTERNAL", "start": start, "end": start + 1, "status": "UNSET",
            "attributes": {}, "resource": {}}


def _write(storage_key: str, spans: list[dict[str, object]], url: str) -> None:
    open_storage(url).put_bytes(storage_key, "".join(json.dumps(s) + "\n" for s in spans).encode())


def test_jobs_spans_merge_into_trace_jsonl_once_each() -> None:
    url = "memory://merge-test"
    storage = open_storage(url)
    _write("runs/r1/trace/plan.1.jsonl", [_span("1" * 16, 2.0, "plan")], url)
    _write("runs/r1/trace/render-0.2.jsonl", [_span("2" * 16, 3.0), _span("3" * 16, 1.0)], url)
    assert trace_store.merge_spans(storage, "r1") == 3
    assert storage.list("runs/r1/trace/") == []  # merged parts are removed
    merged = [json.loads(line) for line in storage.get_bytes("runs/r1/trace.jsonl").splitlines()]
    assert sorted(s["span_id"] for s in merged) == ["1" * 16, "2" * 16, "3" * 16]
    assert [s["span_id"] for s in trace_store.load_spans(storage, "r1")] == ["3" * 16, "1" * 16,
                                                                          "2" * 16]  # by start
    # A later job (a retried encode, the CLI's run span) adds its part; a span seen twice is kept once.
    _write("runs/r1/trace/run.9.jsonl", [_span("9" * 16, 0.5, "run"), _span("1" * 16, 2.0, "plan")],
           url)
    assert [s["name"] for s in trace_store.load_spans(storage, "r1")] == ["run", "render", "plan",
                                                                       "render"]
    assert trace_store.merge_spans(storage, "r1") == 4
    assert len(storage.get_bytes("runs/r1/trace.jsonl").splitlines()) == 4


def test_a_run_with_no_stored_spans_loads_none() -> None:
    assert trace_store.load_spans(open_storage("memory://empty-trace"), "nope") == []


def test_spans_are_exported_in_batches_in_the_ending_thread_and_kept_per_trace() -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from framefarm._otel_sdk import EXPORT_BATCH, _Spans

    exporter = InMemorySpanExporter()
    spans = _Spans(exporter)
    provider = TracerProvider()
    provider.add_span_processor(spans)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("job") as job:
        for _ in range(EXPORT_BATCH * 2 + 10):
            tracer.start_span("frame").end()
    with tracer.start_as_current_span("another run"):
        pass
    assert len(exporter.get_finished_spans()) == EXPORT_BATCH * 2  # two full batches went
    spans.force_flush()
    assert len(exporter.get_finished_spans()) == EXPORT_BATCH * 2 + 12
    mine = spans.take(job.get_span_context().trace_id)
    assert len(mine) == EXPORT_BATCH * 2 + 11 and spans.take(job.get_span_context().trace_id) == []
    spans.after_fork()  # a forked worker starts with nothing of its parent's
    assert spans.take(0) == [] and spans.force_flush()


def test_a_failing_exporter_is_dropped_after_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from framefarm._otel_sdk import _Spans

    class Down(SpanExporter):
        calls = 0

        def export(self, spans: object) -> SpanExportResult:
            Down.calls += 1
            return SpanExportResult.FAILURE

    spans = _Spans(Down())
    provider = TracerProvider()
    provider.add_span_processor(spans)
    for _ in range(3):
        provider.get_tracer("test").start_span("job").end()
        spans.force_flush()
    assert Down.calls == 1 and spans.exporter is None
    assert capsys.readouterr().err.count("could not export spans") == 1


def test_a_trace_starts_only_at_a_run_or_a_job() -> None:
    from opentelemetry.sdk.trace.sampling import ParentBased

    from framefarm._otel_sdk import _RunsOnly

    tracer = TracerProvider(sampler=ParentBased(root=_RunsOnly())).get_tracer("test")
    assert not tracer.start_span("S3.GetObject").is_recording()  # outside any run
    assert tracer.start_span("run").is_recording()
    with tracer.start_as_current_span("render", attributes={"framefarm.run_id": "r1"}) as job:
        assert job.is_recording()
        assert tracer.start_span("S3.GetObject").is_recording()  # inside a job: traced


@pytest.mark.parametrize(("env", "expected"), [
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}, "http://collector:4318/v1/traces"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318",
      "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:9/traces"}, "http://b:9/traces"),
    ({}, None)])
def test_the_endpoint_comes_from_the_settings_given(env: dict[str, str], expected: str | None) -> None:
    from framefarm._otel_sdk import _endpoint

    assert _endpoint(env, "/v1/traces") == expected
