"""Canonical envelope serde in Confluent wire format, through confluent-kafka's registry client.

The same path runs against a real Schema Registry and the embedded one, so a downstream team
decodes canonical topics with any Confluent-compatible client (kcat -s value=avro -r URL).
"""

from __future__ import annotations

import io
import struct
from typing import Any

import fastavro
import orjson
from confluent_kafka.schema_registry import SchemaRegistryClient, record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from .avro_writer import compile_writer
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

    Hot path: the first value per topic goes through confluent-kafka's serializer (which
    asks the registry for the schema id and so refuses an unregistered schema); later values
    reuse that 5-byte wire header and write the body directly, byte-identical: with a writer
    generated from the schema (avro_writer.py), or with fastavro where none can be. Reading,
    values written with our own schema id skip the registry client's per-message machinery
    the same way; any other id (an older or newer writer schema) takes the general path,
    which resolves it against the registry.
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
        self._client = client
        schema = orjson.loads(envelope_schema_str(schema_version))
        self._schema = fastavro.parse_schema(schema)
        self._write = compile_writer(schema, CanonicalEvent)
        self._headers: dict[str, bytes] = {}
        self._own_header: bytes | None = None

    def serialize(self, event: CanonicalEvent, topic: str) -> bytes:
        header = self._headers.get(topic)
        if header is None:
            data = self._serializer(event, SerializationContext(topic, MessageField.VALUE))
            self._headers[topic] = self._own_header = data[:_HEADER_LEN]
            return data
        if self._write is not None:
            return header + self._write(event)
        buf = io.BytesIO()
        buf.write(header)
        fastavro.schemaless_writer(buf, self._schema, event.to_avro())
        return buf.getvalue()

    def deserialize(self, data: bytes, topic: str) -> CanonicalEvent:
        if self._own_header is not None and data[:_HEADER_LEN] == self._own_header:
            body = io.BytesIO(data)
            body.seek(_HEADER_LEN)
            record = fastavro.schemaless_reader(body, self._schema, self._schema)
            return CanonicalEvent.from_avro(record)  # type: ignore[arg-type]
        event = self._deserializer(data, SerializationContext(topic, MessageField.VALUE))
        if self._own_header is None and self._is_own_id(data):
            self._own_header = data[:_HEADER_LEN]
        return event

    def _is_own_id(self, data: bytes) -> bool:
        # Learn our schema's id from the registry once, so a consumer that never produced
        # still takes the fast path for values written with exactly our schema.
        if len(data) < _HEADER_LEN or data[0] != 0:
            return False
        (schema_id,) = struct.unpack(">I", data[1:_HEADER_LEN])
        registered = self._client.get_schema(schema_id)  # cached by the client
        return fastavro.parse_schema(orjson.loads(registered.schema_str)) == self._schema


_HEADER_LEN = 5  # Confluent wire format: magic byte 0 + 4-byte big-endian schema id


def _to_dict(event: CanonicalEvent, _ctx: SerializationContext) -> dict[str, Any]:
    return event.to_avro()


def _from_dict(record: dict[str, Any], _ctx: SerializationContext) -> CanonicalEvent:
    return CanonicalEvent.from_avro(record)
