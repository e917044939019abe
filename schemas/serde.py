"""Canonical envelope serde in Confluent wire format, through confluent-kafka's registry client.

The same path runs against a real Schema Registry and the embedded one, so a downstream team
decodes canonical topics with any Confluent-compatible client (kcat -s value=avro -r URL).
"""

from __future__ import annotations

from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient, record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from .envelope import ENVELOPE_SCHEMA_VERSION, CanonicalEvent, envelope_schema_str


def registry_client(url: str, basic_auth: str | None = None) -> SchemaRegistryClient:
    conf: dict[str, Any] = {"url": url}
    if basic_auth:
        conf["basic.auth.user.info"] = basic_auth
    return SchemaRegistryClient(conf)


class EnvelopeSerde:
    """Serialize/deserialize CanonicalEvent values for canonical topics.

    Schemas are never auto-registered: production registers them with
    ``fhirbus schemas register`` after ``fhirbus schemas check``; the embedded registry
    preloads them from this package. A producer therefore cannot invent a schema version.
    """

    def __init__(
        self, client: SchemaRegistryClient, schema_version: int = ENVELOPE_SCHEMA_VERSION
    ) -> None:
        conf = {
            "auto.register.schemas": False,
            "use.latest.version": False,
            "subject.name.strategy": record_subject_name_strategy,
        }
        self._serializer = AvroSerializer(
            client, envelope_schema_str(schema_version), _to_dict, conf=conf
        )
        self._deserializer = AvroDeserializer(client, from_dict=_from_dict)

    def serialize(self, event: CanonicalEvent, topic: str) -> bytes:
        return self._serializer(event, SerializationContext(topic, MessageField.VALUE))

    def deserialize(self, data: bytes, topic: str) -> CanonicalEvent:
        return self._deserializer(data, SerializationContext(topic, MessageField.VALUE))


def _to_dict(event: CanonicalEvent, _ctx: SerializationContext) -> dict[str, Any]:
    return event.to_avro()


def _from_dict(record: dict[str, Any], _ctx: SerializationContext) -> CanonicalEvent:
    return CanonicalEvent.from_avro(record)
