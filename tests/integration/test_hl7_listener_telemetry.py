"""One span per message, linked to the raw record by its traceparent header; metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fhirbus import telemetry
from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.schemas.topics import RAW_HL7
from fhirbus.settings import Settings

from .test_hl7_listener_support import (
    MllpConnection,
    ack_code,
    listener_settings,
    make_message,
    running_listener,
    topic_records,
)


def span_exporter() -> InMemorySpanExporter:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def test_span_per_message_and_metrics(
    settings: Settings, embedded_stack: EmbeddedStack, tmp_path: Path
) -> None:
    exporter = span_exporter()
    with running_listener(listener_settings(settings, tmp_path)) as listener:
        with MllpConnection(listener.port) as conn:
            assert ack_code(conn.send(make_message("OBS-1"))) == "AA"
            assert ack_code(conn.send(b"garbage")) == "AR"
            assert ack_code(conn.send(make_message("OBS-1"))) == "AA"  # duplicate
        records = topic_records(embedded_stack.bootstrap, RAW_HL7, listener.listener_id, 1)
        counts = listener.counts
        depth = listener.app.listener.metrics.spool_depth
    spans = [s for s in exporter.get_finished_spans() if s.name == "hl7.mllp.message"]
    assert len(spans) == 3
    assert [s.attributes["hl7.ack_code"] for s in spans] == ["AA", "AR", "AA"]
    traceparent = records[0][1]["traceparent"].decode()
    first = spans[0].get_span_context()
    assert traceparent.split("-")[1:3] == [f"{first.trace_id:032x}", f"{first.span_id:016x}"]
    assert counts["received"] == 3 and counts["accepted"] == 1 and counts["rejected"] == 1
    assert counts["duplicates"] == 1 and counts.get("spooled", 0) == 0 and depth == 0


def test_exported_listener_instruments(
    settings: Settings,
    embedded_stack: EmbeddedStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a metrics backend sees, per feed: not the plain counts the other tests read."""
    # The global MeterProvider is set once per process and its readers are fixed when it is
    # built, so the listener gets a meter from a provider of this test's own.
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    monkeypatch.setattr(telemetry, "meter", provider.get_meter)
    conf = listener_settings(settings, tmp_path)
    feed = conf.hl7.feed
    try:
        with running_listener(conf) as listener, MllpConnection(listener.port) as conn:
            codes = [
                ack_code(conn.send(make_message("M-1"))),
                ack_code(conn.send(b"garbage")),
                ack_code(conn.send(make_message("M-2"))),
                ack_code(conn.send(make_message("M-3").replace(b"|2.5\r", b"|9.9\r"))),
                ack_code(conn.send(b"PID|1")),
            ]
            points = exported_points(reader)
    finally:
        provider.shutdown()
    assert codes == ["AA", "AR", "AA", "AE", "AR"]
    assert all(p.attributes["feed"] == feed for pts in points.values() for p in pts)
    assert [p.value for p in points["hl7.mllp.received"]] == [5]
    assert [p.value for p in points["hl7.mllp.accepted"]] == [2]
    rejected = {
        (p.attributes["reason"], p.attributes["code"]): p.value
        for p in points["hl7.mllp.rejected"]
    }
    assert rejected == {("no_msh", "AR"): 2, ("unsupported_version", "AE"): 1}
    (latency,) = points["hl7.mllp.ack_latency"]
    assert latency.count == 5 and sum(latency.bucket_counts) == 5
    assert 0 < latency.min <= latency.max < 30_000  # milliseconds


def exported_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """Data points by instrument name, from the listener's meter."""
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: list(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        if scope.scope.name == "fhirbus.hl7.listener"
        for metric in scope.metrics
    }
