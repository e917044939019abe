"""The listener's per-message span: recorded when something records spans; otherwise only
the trace context it carries (log lines, the raw record's traceparent), without an SDK span."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fhirbus import telemetry
from fhirbus.producers.mllp import listener


def handled_message() -> tuple[str | None, bytes, bool]:
    """(trace id for log lines, traceparent for the raw record, span recording) of one."""
    tracer = telemetry.tracer("test")
    with listener._MessageSpan(tracer, {"fhirbus.feed": "f"}) as span:
        span.set_attribute("hl7.msh9", "ADT^A01")
        headers = dict(telemetry.inject())
        return telemetry.current_trace_id(), headers["traceparent"], span.is_recording()


def test_with_a_span_processor_each_message_is_a_recorded_span(
    spans: InMemorySpanExporter,
) -> None:
    trace_id, traceparent, recording = handled_message()
    (span,) = [s for s in spans.get_finished_spans() if s.name == "hl7.mllp.message"]
    context = span.get_span_context()
    assert recording and trace_id == f"{context.trace_id:032x}"
    ids = f"{context.trace_id:032x}-{context.span_id:016x}"
    assert traceparent == f"00-{ids}-{int(context.trace_flags):02x}".encode()
    flags = int(context.trace_flags)
    assert span.attributes is not None and span.attributes["hl7.msh9"] == "ADT^A01"
    assert flags & 1  # sampled


def test_without_one_a_message_still_has_its_own_sampled_trace(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded_flags = handled_message()[1].decode().split("-")[3]
    spans.clear()
    monkeypatch.setattr(telemetry, "spans_recorded", lambda: False)
    first, second = handled_message(), handled_message()
    for trace_id, traceparent, recording in (first, second):
        version, in_header, span_id, flags = traceparent.decode().split("-")
        assert not recording and trace_id == in_header and int(span_id, 16)
        # Flags as a recorded span's (sampled): later stages record their spans as before.
        assert (version, flags) == ("00", recorded_flags) and int(flags, 16) & 1
    assert first[0] != second[0]
    assert not [s for s in spans.get_finished_spans() if s.name == "hl7.mllp.message"]


def test_an_escaping_exception_marks_the_span_without_its_text(
    spans: InMemorySpanExporter,
) -> None:
    # Regression: the span's status and exception event carried str(exc), which may quote
    # message content (PHI), to whatever exports spans.
    with pytest.raises(ValueError), listener._MessageSpan(telemetry.tracer("test"), {}):
        raise ValueError("PID|1||MRN-4471||Zebulonski^Quentina")
    (span,) = [s for s in spans.get_finished_spans() if s.name == "hl7.mllp.message"]
    assert span.status.description == "ValueError"
    assert span.attributes is not None and span.attributes["error.type"] == "ValueError"
    exported = span.to_json()
    assert "Zebulonski" not in exported and "MRN-4471" not in exported
