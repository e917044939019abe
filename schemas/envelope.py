"""The canonical event envelope as a Python value, and its deterministic identity."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from .topics import ENVELOPE_SUBJECT

ENVELOPE_SCHEMA_VERSION = 1
# Fixed namespace: event and resource ids must be identical on every machine, forever.
FHIRBUS_NAMESPACE = uuid.UUID("6f0e1d4c-8a3b-5b8e-9c51-2f4a7e9d0b13")


def envelope_schema_str(version: int = ENVELOPE_SCHEMA_VERSION) -> str:
    return (
        resources.files(__package__)
        .joinpath("avro", f"{ENVELOPE_SUBJECT}.v{version}.avsc")
        .read_text(encoding="utf-8")
    )


def stable_id(*parts: object) -> str:
    """A UUIDv5 over the parts; the same source identity always gives the same id."""
    name = "\x1f".join("" if p is None else str(p) for p in parts)
    return str(uuid.uuid5(FHIRBUS_NAMESPACE, name))


@dataclass(frozen=True, slots=True)
class Source:
    kind: str
    system: str
    feed: str
    message_control_id: str | None = None
    message_type: str | None = None
    lsn: str | None = None
    tx_id: int | None = None
    table: str | None = None
    raw_topic: str | None = None
    raw_partition: int | None = None
    raw_offset: int | None = None


@dataclass(frozen=True, slots=True)
class CanonicalEvent:
    event_id: str
    event_type: str
    resource_type: str
    resource_id: str
    resource_version: int
    occurred_at: datetime
    recorded_at: datetime
    source: Source
    mapping_version: str
    resource: bytes
    subject_key: str | None = None
    schema_version: int = ENVELOPE_SCHEMA_VERSION
    correlation_id: str | None = None
    causation_id: str | None = None
    data_classification: str = "phi"
    content_type: str = "application/fhir+json"
    extras: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def key(self) -> str:
        """Kafka key: the patient, so one patient's events stay ordered in each topic."""
        return self.subject_key or f"{self.resource_type}/{self.resource_id}"

    def with_causation(self, causation_id: str) -> CanonicalEvent:
        return replace(self, causation_id=causation_id)

    def to_avro(self) -> dict[str, Any]:
        record = {f: getattr(self, f) for f in _AVRO_FIELDS}
        # Source holds scalars only: a plain field read, not asdict's recursive deepcopy
        # (which was two thirds of serializing an event).
        record["source"] = {f: getattr(self.source, f) for f in _SOURCE_FIELDS}
        return record

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> CanonicalEvent:
        values = {f: record.get(f) for f in _AVRO_FIELDS}
        values["source"] = Source(**record["source"])
        values["occurred_at"] = _aware(record["occurred_at"])
        values["recorded_at"] = _aware(record["recorded_at"])
        # Fields a newer writer added (read through the registry path) are kept as extras;
        # a record of exactly our schema has none, which is what consumers see per event.
        extras = {} if record.keys() == _KNOWN else {
            k: v for k, v in record.items() if k not in _KNOWN}
        return cls(**values, extras=extras)


def _aware(value: datetime | int) -> datetime:
    if isinstance(value, int):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


_AVRO_FIELDS: tuple[str, ...] = tuple(
    f for f in CanonicalEvent.__dataclass_fields__ if f not in ("extras",)
)
_SOURCE_FIELDS: tuple[str, ...] = tuple(Source.__dataclass_fields__)
_KNOWN = frozenset(_AVRO_FIELDS)
