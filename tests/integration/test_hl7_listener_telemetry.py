"""One span per message, linked to the raw record by its traceparent header; metrics."""

from __future__ import annotations

from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

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
