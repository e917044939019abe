"""The canonical contract end to end on the embedded stack: Avro envelope in Confluent wire
format through the embedded registry, decodable by kcat; one trace from producer to consumer."""

from __future__ import annotations

import io
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import fastavro
import orjson
import pytest
import requests
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from fhirbus import telemetry
from fhirbus.consumers.records import Record
from fhirbus.consumers.runtime import ConsumerRuntime, ConsumerSpec
from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.kafka.config import producer_config, resolve_registry_url
from fhirbus.kafka.producer import Producer
from fhirbus.schemas.envelope import CanonicalEvent, Source, stable_id
from fhirbus.schemas.serde import EnvelopeSerde, registry_client
from fhirbus.settings import Settings


def _event(n: int) -> CanonicalEvent:
    resource = {"resourceType": "Patient", "id": stable_id("test", n), "active": True}
    return CanonicalEvent(
        event_id=stable_id("test-event", n),
        event_type="patient.upserted",
        resource_type="Patient",
        resource_id=resource["id"],
        resource_version=1,
        occurred_at=datetime(2026, 11, 1, 12, 0, tzinfo=UTC),
        recorded_at=datetime(2026, 11, 1, 12, 0, 1, tzinfo=UTC),
        source=Source(kind="hl7v2", system="LAB^HOSP", feed="lab", message_control_id=f"M{n}"),
        mapping_version="test-1",
        resource=orjson.dumps(resource),
        subject_key=resource["id"],
    )


def test_envelope_round_trips_through_the_embedded_registry(settings: Settings) -> None:
    serde = EnvelopeSerde(registry_client(resolve_registry_url(settings)))
    event = _event(1)
    data = serde.serialize(event, "fhir.patient.v1")
    assert data[0] == 0  # Confluent wire format: magic byte, then a 4-byte schema id
    assert serde.deserialize(data, "fhir.patient.v1") == event


def test_same_source_identity_gives_the_same_event_id() -> None:
    assert _event(7).event_id == _event(7).event_id != _event(8).event_id


def _kcat_features() -> str:
    if shutil.which("kcat") is None:
        return ""
    return subprocess.run(["kcat", "-V"], capture_output=True, text=True, check=False).stdout


def _publish_one(stack: EmbeddedStack, settings: Settings, topic: str) -> CanonicalEvent:
    stack.create_topic(topic, 1)
    serde = EnvelopeSerde(registry_client(resolve_registry_url(settings)))
    producer = Producer(producer_config(settings))
    event = _event(42)
    producer.send(topic, serde.serialize(event, topic), key=event.key)
    assert producer.flush(30) == 0
    return event


def _kcat(stack: EmbeddedStack, topic: str, *extra: str) -> bytes:
    cmd = ["kcat", "-b", stack.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q", *extra]
    return subprocess.run(cmd, capture_output=True, timeout=60, check=True).stdout


@pytest.mark.skipif(not _kcat_features(), reason="kcat not installed (scripts/setup installs it)")
def test_kcat_reads_a_canonical_topic_and_the_registry_decodes_it(
    embedded_stack: EmbeddedStack, settings: Settings, unique: str
) -> None:
    """Debian's kcat, reading the topic as any downstream team would; the value is then
    decoded the way kcat's Avro mode (libserdes) does it: GET /schemas/ids/{id}."""
    topic = f"fhir.patient.v1-kcat-{unique}"
    event = _publish_one(embedded_stack, settings, topic)
    value = _kcat(embedded_stack, topic, "-f", "%s", "-c", "1")
    assert value[0] == 0
    schema_id = int.from_bytes(value[1:5], "big")
    reply = requests.get(f"{embedded_stack.registry_url}/schemas/ids/{schema_id}", timeout=10)
    schema = fastavro.parse_schema(orjson.loads(reply.json()["schema"]))
    decoded = fastavro.schemaless_reader(io.BytesIO(value[5:]), schema)
    assert decoded["event_id"] == event.event_id
    assert decoded["source"]["message_control_id"] == "M42"


@pytest.mark.skipif(
    "avro" not in _kcat_features(),
    reason="this kcat build has no Avro/Schema Registry support (Debian builds kcat without "
    "libserdes); the registry call it would make is covered by the test above",
)
def test_kcat_avro_mode_decodes_through_the_embedded_registry(
    embedded_stack: EmbeddedStack, settings: Settings, unique: str
) -> None:
    topic = f"fhir.patient.v1-kcatavro-{unique}"
    event = _publish_one(embedded_stack, settings, topic)
    out = _kcat(embedded_stack, topic, "-s", "value=avro", "-r", embedded_stack.registry_url, "-J")
    record = orjson.loads(out.decode().strip().splitlines()[0])
    assert record["payload"]["event_id"] == event.event_id


NODE_CLIENT = Path(__file__).resolve().parents[1] / "clients" / "node"


@pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_CLIENT / "node_modules").is_dir(),
    reason="node or tests/clients/node/node_modules missing (scripts/setup installs them)",
)
def test_a_third_party_confluent_client_decodes_a_canonical_topic(unique: str) -> None:
    """kafkajs + @kafkajs/confluent-schema-registry: no line of ours on the reading side.
    (Its own single-broker stack: kafkajs's group join stalls on the 3-broker mock cluster.)"""
    topic = f"fhir.patient.v1-node-{unique}"
    with EmbeddedStack(num_brokers=1) as stack:
        stack.create_topic(topic, 1)
        serde = EnvelopeSerde(registry_client(stack.registry_url))
        producer = Producer({"bootstrap.servers": stack.bootstrap})
        event = _event(42)
        producer.send(topic, serde.serialize(event, topic), key=event.key)
        assert producer.flush(30) == 0
        producer.close()
        out = subprocess.run(
            ["node", str(NODE_CLIENT / "decode_canonical.js"), stack.bootstrap,
             stack.registry_url, topic],
            capture_output=True, text=True, timeout=90, check=False,
        )
    assert out.returncode == 0, out.stderr
    decoded = orjson.loads(out.stdout.strip().splitlines()[0])
    assert decoded["event_id"] == event.event_id
    assert decoded["source"]["message_control_id"] == "M42"
    assert orjson.loads(decoded["resource"])["resourceType"] == "Patient"


def test_producer_and_consumer_spans_share_one_trace(
    embedded_stack: EmbeddedStack, settings: Settings, unique: str, spans: InMemorySpanExporter
) -> None:
    topic = f"trace-{unique}"
    embedded_stack.create_topic(topic, 1)
    producer = Producer(producer_config(settings))
    assert producer.send(topic, b"{}", key="k").result(30) is not None
    seen: list[str | None] = []

    def handler(record: Record) -> None:
        seen.append(telemetry.current_trace_id())

    spec = ConsumerSpec(stage="test", group_id=f"g-{unique}", topics=[topic], handler=handler,
                        dead_letter_topic=f"trace-dlq-{unique}")
    ConsumerRuntime(spec, settings).run(max_records=1, idle_exit_s=15)
    finished = spans.get_finished_spans()
    produced = [s for s in finished if s.kind is SpanKind.PRODUCER and s.name.startswith(topic)]
    consumed = [s for s in finished if s.kind is SpanKind.CONSUMER and s.name.startswith(topic)]
    assert len(produced) == 1 and len(consumed) == 1
    trace_id = produced[0].context.trace_id
    assert consumed[0].context.trace_id == trace_id
    parent = consumed[0].parent
    assert parent is not None and parent.span_id == produced[0].context.span_id
    assert seen == [format(trace_id, "032x")]
