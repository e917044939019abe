"""Consume+handle throughput: the fhirbus runtime versus a bare confluent-kafka consumer.

Both read the same 100k events from the embedded broker in this one run, decode the same
JSON and call the same handler; the bare loop commits asynchronously per batch, the runtime
does everything it promises (spans, metrics, classified errors, offsets after effects).
Target: the runtime keeps at least 50% of bare throughput.

The events carry a W3C ``traceparent``, as everything a fhirbus producer writes does, so the
runtime's consumer-span path is what is measured (``--untraced`` for events without one).
Telemetry is configured as in every process with ``FHIRBUS_TELEMETRY__EXPORTER=none``: real
SDK providers, no exporter, so spans are not recorded. ``--record-spans`` adds a batch span
processor (with an exporter that discards) to show what recording every span costs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from confluent_kafka import Consumer
from opentelemetry import trace
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from fhirbus import telemetry
from fhirbus.consumers.runtime import ConsumerRuntime, ConsumerSpec
from fhirbus.consumers.sinks import KafkaSink
from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.kafka.config import producer_config
from fhirbus.kafka.producer import Producer
from fhirbus.settings import load_settings


def handler_work(value: dict) -> int:
    return value["id"] & 1


def produce(settings, topic: str, n: int, traced: bool) -> None:
    producer = Producer(producer_config(settings, **{"linger.ms": 20}), trace_propagation=traced)
    payload = {"id": 0, "resourceType": "Observation", "status": "final", "value": 7.2}
    for i in range(n):
        payload["id"] = i
        producer.send(topic, orjson.dumps(payload), key=str(i % 64))
    assert producer.flush(120) == 0


def bare(bootstrap: str, topic: str, n: int) -> float:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bare-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    seen, start = 0, None
    while seen < n:
        batch = c.consume(500, 0.5)
        for msg in batch:
            if msg.error() is None:
                start = start or time.perf_counter()
                handler_work(orjson.loads(msg.value()))
                seen += 1
        if batch:
            # As confluent-kafka's own example does: commit asynchronously per batch.
            c.commit(asynchronous=True)
    elapsed = time.perf_counter() - start
    c.close()
    return n / elapsed


class _Discard(SpanExporter):
    def export(self, spans):  # type: ignore[no-untyped-def]
        return SpanExportResult.SUCCESS


class _TimedSink(KafkaSink):
    """The runtime's own sink, noting when the last batch was applied."""

    finished = 0.0

    def apply(self, records, positions):  # type: ignore[no-untyped-def]
        super().apply(records, positions)
        self.finished = time.perf_counter()


def runtime(settings, topic: str, n: int) -> float:
    started: list[float] = []

    def handler(record):
        # Same per-record work as the bare loop: a start-time check, then the handler.
        if not started:
            started.append(time.perf_counter())
        handler_work(record.value)

    spec = ConsumerSpec(stage="bench", group_id=f"rt-{uuid.uuid4().hex}", topics=[topic],
                        handler=handler, decode=lambda raw, _t: orjson.loads(raw))
    producer = Producer(producer_config(settings))
    sink = _TimedSink(producer)
    rt = ConsumerRuntime(spec, settings, sink=sink, producer=producer)
    rt.run(max_records=n)
    producer.close()
    # Up to the last applied batch (the bare loop stops at its last record, before its
    # final commit): consumer close is not throughput.
    return n / (sink.finished - started[0])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--untraced", action="store_true", help="events without traceparent")
    parser.add_argument("--record-spans", action="store_true",
                        help="record every span (batch processor, discarding exporter)")
    args = parser.parse_args()
    with EmbeddedStack(num_brokers=1, with_registry=False) as stack, \
            tempfile.TemporaryDirectory() as state:
        stack.publish(Path(state))
        os.environ["FHIRBUS_STATE_DIR"] = state
        settings = load_settings()
        telemetry.configure(settings, service="bench")  # real SDK providers, no exporter
        topic = f"bench-{uuid.uuid4().hex[:6]}"
        stack.create_topic(topic, 4)
        produce(settings, topic, args.events, traced=not args.untraced)
        if args.record_spans:
            trace.get_tracer_provider().add_span_processor(  # type: ignore[attr-defined]
                BatchSpanProcessor(_Discard()))
        # Alternate the two over the same events; the median damps noise from other load.
        bare_rates, rt_rates = [], []
        for _ in range(args.rounds):
            bare_rates.append(bare(stack.bootstrap, topic, args.events))
            rt_rates.append(runtime(settings, topic, args.events))
    bare_rate, rt_rate = statistics.median(bare_rates), statistics.median(rt_rates)
    ratios = sorted(r / b for r, b in zip(rt_rates, bare_rates, strict=True))
    ratio = statistics.median(ratios)
    shape = "untraced" if args.untraced else "traced"
    spans = "recorded" if args.record_spans else "not recorded (no exporter)"
    print(f"events:              {args.events} {shape} x {args.rounds} rounds (medians); "
          f"spans {spans}")
    print(f"bare consumer:       {bare_rate:,.0f} events/s")
    print(f"fhirbus runtime:     {rt_rate:,.0f} events/s")
    verdict = "MET" if ratio >= 0.5 else "MISSED"
    print(f"runtime/bare ratio:  {ratio:.2f}  (target >= 0.50: {verdict}; rounds "
          f"{ratios[0]:.2f}-{ratios[-1]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
