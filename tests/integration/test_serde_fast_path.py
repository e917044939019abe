"""The envelope serde's fast path writes exactly what confluent-kafka's serializer writes, and
reads values of other schema ids through the registry as before."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from hypothesis import given, settings
from hypothesis import strategies as st

from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.schemas.envelope import CanonicalEvent, Source, envelope_schema_str
from fhirbus.schemas.serde import EnvelopeSerde, registry_client

TOPIC = "fhir.observation.v1"
_text = st.text(max_size=40)


def _event(version: int, system: str, resource: bytes, lsn: str | None) -> CanonicalEvent:
    at = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    return CanonicalEvent(
        event_id="e", event_type="observation.final", resource_type="Observation",
        resource_id="r", resource_version=version, occurred_at=at, recorded_at=at,
        source=Source(kind="cdc", system=system, feed=system, lsn=lsn), mapping_version="m",
        resource=resource, subject_key=system or None)


def test_fast_path_is_byte_identical_and_round_trips(embedded_stack: EmbeddedStack) -> None:
    client = registry_client(embedded_stack.registry_url)
    serde = EnvelopeSerde(client)
    reference = AvroSerializer(client, envelope_schema_str(), lambda e, _c: e.to_avro(),
                               conf={"auto.register.schemas": False,
                                     "subject.name.strategy": _record_name})
    ctx = SerializationContext(TOPIC, MessageField.VALUE)

    @settings(max_examples=60, deadline=None)
    @given(st.integers(0, 2**62), _text, st.binary(max_size=200), st.none() | _text)
    def check(version: int, system: str, resource: bytes, lsn: str | None) -> None:
        event = _event(version, system, resource, lsn)
        data = serde.serialize(event, TOPIC)
        assert data == reference(event, ctx)
        assert serde.deserialize(data, TOPIC) == event
        # A reader that never produced learns the id once, then decodes the same way.
        assert EnvelopeSerde(client).deserialize(data, TOPIC) == event

    check()


def test_values_of_another_schema_id_take_the_registry_path(
    embedded_stack: EmbeddedStack,
) -> None:
    client = registry_client(embedded_stack.registry_url)
    serde = EnvelopeSerde(client)
    event = _event(3, "lab", b"{}", None)
    data = serde.serialize(event, TOPIC)
    # Same body, a schema id that is not ours: must not be decoded with our schema blindly.
    foreign = b"\x00" + (int.from_bytes(data[1:5], "big") + 999).to_bytes(4, "big") + data[5:]
    reader = EnvelopeSerde(client)
    reader.deserialize(data, TOPIC)
    with pytest.raises(SchemaRegistryError):  # the registry does not know that id
        reader.deserialize(foreign, TOPIC)
    assert AvroDeserializer(client)(data, SerializationContext(TOPIC, MessageField.VALUE))


def _record_name(_ctx: SerializationContext, record_name: str) -> str:
    return record_name
