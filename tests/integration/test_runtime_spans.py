"""Consumer spans: one per traced record, child of its producer span, built lazily.

The runtime builds a record's span when something asks for it during the handler, else at
the end of the batch when spans are recorded, and not at all when nothing records them.
"""

from __future__ import annotations

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from fhirbus import telemetry
from fhirbus.consumers import spans as spans_module
from fhirbus.consumers.records import Record
from fhirbus.consumers.runtime import ConsumerRuntime, ConsumerSpec
from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.kafka.config import producer_config
from fhirbus.kafka.producer import Producer
from fhirbus.settings import Settings
from tests.kafka_helpers import headers_of, read_all

N = 60


def _produce(settings: Settings, topic: str, n: int, traced: bool = True) -> None:
    producer = Producer(producer_config(settings), trace_propagation=traced)
    for i in range(n):
        producer.send(topic, orjson.dumps({"id": i}), key=str(i % 7))
    assert producer.flush(30) == 0
    producer.close()


def _of(spans: InMemorySpanExporter, topic: str, kind: SpanKind) -> list[ReadableSpan]:
    """Spans of ``topic`` itself (``<topic> publish``, ``<topic> process``, ``<topic> work``),
    not of its dead-letter topic."""
    return [s for s in spans.get_finished_spans()
            if s.kind is kind and s.name.split(" ")[0] == topic]


def _run(settings: Settings, topic: str, unique: str, handler, n: int = N) -> ConsumerRuntime:  # type: ignore[no-untyped-def]
    spec = ConsumerSpec(stage="test", group_id=f"g-{unique}", topics=[topic], handler=handler,
                        decode=lambda raw, _t: orjson.loads(raw),
                        dead_letter_topic=f"{topic}-dlq")
    runtime = ConsumerRuntime(spec, settings)
    assert runtime.run(max_records=n, idle_exit_s=15) == n
    return runtime


def test_every_traced_record_gets_a_consumer_span_under_its_producer_span(
    embedded_stack: EmbeddedStack, settings: Settings, unique: str, spans: InMemorySpanExporter
) -> None:
    """Nobody asks for the spans during the handler: they are built at the end of the
    batch, one per record, each under its own producer span; a dead letter's span is an
    error and its dlq.trace_id is that span's trace."""
    topic = f"spans-{unique}"
    embedded_stack.create_topic(topic, 3)
    _produce(settings, topic, N)

    def handler(record: Record) -> None:
        if record.value["id"] == 7:
            raise ValueError("unmappable")

    _run(settings, topic, unique, handler)
    produced = {s.context.trace_id: s for s in _of(spans, topic, SpanKind.PRODUCER)}
    consumed = _of(spans, topic, SpanKind.CONSUMER)
    assert len(produced) == N and len(consumed) == N
    assert {s.context.trace_id for s in consumed} == set(produced)
    for span in consumed:
        assert span.parent is not None
        assert span.parent.span_id == produced[span.context.trace_id].context.span_id
        assert span.start_time is not None and span.end_time is not None
        assert span.start_time <= span.end_time
        assert span.attributes is not None and span.attributes["messaging.kafka.offset"] >= 0
    failed = [s for s in consumed if s.status.status_code is StatusCode.ERROR]
    assert len(failed) == 1
    (dead,) = read_all(embedded_stack.bootstrap, f"{topic}-dlq", 1)
    assert orjson.loads(dead.value())["id"] == 7
    assert headers_of(dead)["dlq.trace_id"] == format(failed[0].context.trace_id, "032x")
    # One trace context, in the original's trace (regression: the original's traceparent
    # was copied and a second one, of a new trace, appended on publish).
    parents = [v for k, v in dead.headers() or [] if k == "traceparent"]
    assert len(parents) == 1
    assert parents[0].decode().split("-")[1] == format(failed[0].context.trace_id, "032x")


def test_the_handler_runs_inside_its_own_records_span(
    embedded_stack: EmbeddedStack, settings: Settings, unique: str, spans: InMemorySpanExporter
) -> None:
    """Ids seen during the handler are the exported ones: a span the handler opens is a
    child of its record's consumer span, and the current trace is its producer's."""
    topic = f"spans-in-{unique}"
    embedded_stack.create_topic(topic, 2)
    _produce(settings, topic, N)
    tracer = telemetry.tracer("test")
    seen: dict[int, str | None] = {}

    def handler(record: Record) -> None:
        seen[record.value["id"]] = telemetry.current_trace_id()
        with tracer.start_as_current_span(f"{topic} work {record.value['id']}"):
            pass

    _run(settings, topic, unique, handler)
    consumer_of = {s.context.trace_id: s for s in _of(spans, topic, SpanKind.CONSUMER)}
    produced = _of(spans, topic, SpanKind.PRODUCER)
    assert len(consumer_of) == N
    assert sorted(seen.values()) == sorted(format(s.context.trace_id, "032x") for s in produced)
    work = _of(spans, topic, SpanKind.INTERNAL)
    assert len(work) == N
    for span in work:
        parent = consumer_of[span.context.trace_id]
        assert span.parent is not None and span.parent.span_id == parent.context.span_id


def test_unrecorded_spans_are_built_only_when_asked_for(
    embedded_stack: EmbeddedStack, settings: Settings, unique: str, spans: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As with FHIRBUS_TELEMETRY__EXPORTER=none: no span is built for a record nobody asks
    about, while a record whose handler asks still continues its producer's trace."""
    topic = f"spans-lazy-{unique}"
    embedded_stack.create_topic(topic, 2)
    _produce(settings, topic, N)
    monkeypatch.setattr(spans_module, "spans_recorded", lambda: False)
    seen: dict[int, str | None] = {}

    def handler(record: Record) -> None:
        if record.value["id"] % 3 == 0:
            seen[record.value["id"]] = telemetry.current_trace_id()

    _run(settings, topic, unique, handler)
    consumed = _of(spans, topic, SpanKind.CONSUMER)
    assert len(consumed) == len(seen) == N // 3
    assert {format(s.context.trace_id, "032x") for s in consumed} == set(seen.values())


def test_untraced_records_get_no_span(
    embedded_stack: EmbeddedStack, settings: Settings, unique: str, spans: InMemorySpanExporter
) -> None:
    topic = f"spans-none-{unique}"
    embedded_stack.create_topic(topic, 1)
    _produce(settings, topic, 10, traced=False)
    seen: list[str | None] = []
    _run(settings, topic, unique, lambda r: seen.append(telemetry.current_trace_id()), n=10)
    assert _of(spans, topic, SpanKind.CONSUMER) == [] and seen == [None] * 10


def test_spans_are_recorded_only_by_a_provider_with_a_processor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bare = TracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: bare)
    assert not spans_module.spans_recorded()
    bare.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    assert spans_module.spans_recorded()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: trace.NoOpTracerProvider())
    assert not spans_module.spans_recorded()


def test_published_effects_continue_the_trace_of_their_record(
    embedded_stack: EmbeddedStack, settings: Settings, unique: str, spans: InMemorySpanExporter
) -> None:
    """Regression: effects were sent after the handler with no current context, so every
    canonical event started a new trace instead of continuing its raw record's."""
    from fhirbus.consumers.records import Publish

    topic, out = f"chain-{unique}", f"chain-out-{unique}"
    embedded_stack.create_topic(topic, 2)
    _produce(settings, topic, 10)

    def handler(record: Record) -> list[Publish]:
        return [Publish(out, orjson.dumps(record.value), str(record.value["id"]))] * 2

    _run(settings, topic, unique, handler, n=10)
    incoming = {s.context.trace_id for s in _of(spans, topic, SpanKind.PRODUCER)}
    published = read_all(embedded_stack.bootstrap, out, 20)
    traces = {int(headers_of(m)["traceparent"].split("-")[1], 16) for m in published}
    assert len(incoming) == 10 and traces == incoming
    assert {s.context.trace_id for s in _of(spans, out, SpanKind.PRODUCER)} == incoming
