"""Trace context on produced records: a PRODUCER span per record only where spans are kept."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fhirbus import telemetry
from fhirbus.kafka.producer import Producer


class _Recorder:
    """Stands in for the librdkafka handle: keeps what would have been produced."""

    def __init__(self) -> None:
        self.headers: list[list[tuple[str, bytes]]] = []

    def produce(self, topic: str, value: bytes | None, **kwargs: Any) -> None:
        self.headers.append(kwargs["headers"])

    def poll(self, timeout: float = 0) -> int:
        return 0


def _producer() -> tuple[Producer, _Recorder]:
    producer = Producer({"bootstrap.servers": "127.0.0.1:1"}, background_poll=False)
    recorder = _Recorder()
    producer._producer.close()  # never used: the recorder takes its place
    producer._producer = recorder  # type: ignore[assignment]
    producer._closed = True
    return producer, recorder


def _traceparent(headers: list[tuple[str, bytes]]) -> str:
    values = [v.decode() for k, v in headers if k == "traceparent"]
    assert len(values) == 1
    return values[0]


def test_recorded_spans_get_one_producer_span_per_record(spans: InMemorySpanExporter) -> None:
    producer, recorder = _producer()
    with telemetry.tracer("t").start_as_current_span("parent"):
        producer.send("fhir.observation.v1", b"v", b"k", [("x", b"1")])
        producer.send("fhir.observation.v1", b"v", b"k", None)
    produced = [s for s in spans.get_finished_spans() if s.kind == trace.SpanKind.PRODUCER]
    assert len(produced) == 2
    for span, headers in zip(produced, recorder.headers, strict=True):
        assert _traceparent(headers).split("-")[2] == format(span.context.span_id, "016x")
    assert ("x", b"1") in recorder.headers[0]


def test_unrecorded_spans_carry_the_current_trace_without_a_span(
        spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch) -> None:
    producer, recorder = _producer()
    with telemetry.tracer("t").start_as_current_span("parent") as parent:
        spans.clear()
        monkeypatch.setattr(telemetry, "spans_recorded", lambda: False)
        producer.send("fhir.observation.v1", b"v", b"k", [("traceparent", b"stale")])
        ctx = parent.get_span_context()
    assert not [s for s in spans.get_finished_spans() if s.kind == trace.SpanKind.PRODUCER]
    _, trace_id, span_id, _ = _traceparent(recorder.headers[0]).split("-")
    assert (trace_id, span_id) == (format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"))


def test_unrecorded_spans_outside_a_trace_still_start_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    producer, recorder = _producer()
    monkeypatch.setattr(telemetry, "spans_recorded", lambda: False)
    producer.send("fhir.observation.v1", b"v", b"k", None)
    producer.send("fhir.observation.v1", b"v", b"k", None)
    first, second = (_traceparent(h).split("-")[1] for h in recorder.headers)
    assert first != second and int(first, 16) != 0
