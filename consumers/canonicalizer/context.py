"""What a mapper works with (the parsed message, its raw reference, the feed's site config)
and what it produces (``Mapped`` resources, each with its event type and version)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from fhirbus.hl7 import Message, Segment

from . import identity
from .datatypes import Json, Ts, parse_ts, uri_part
from .site import FeedConfig

MAPPING_VERSION = "hl7v2-fhir-1.0.0"
MAPPING_TAG_SYSTEM = "https://fhirbus.dev/fhir/CodeSystem/mapping-version"


@dataclass(frozen=True, slots=True)
class RawRef:
    """Where the raw bytes live: enough to find them again, and the receive time."""

    topic: str
    partition: int
    offset: int
    feed: str
    received_at: datetime

    @classmethod
    def from_record(cls, record: Any) -> RawRef:
        """From a consumers.records.Record; received_at from the listener's header (the
        Kafka timestamp when absent), never from the clock, so re-mapping is deterministic."""
        received = _parse_iso(record.header("fhirbus.received_at"))
        if received is None:
            received = datetime.fromtimestamp(max(record.timestamp_ms, 0) / 1000, tz=UTC)
        key = record.key
        feed = key.decode("utf-8", "replace") if isinstance(key, bytes) else (key or "")
        return cls(record.topic, record.partition, record.offset, feed or "default", received)


def _parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(slots=True)
class Mapped:
    """One resource state produced from a message."""

    resource_type: str
    resource: Json
    event_type: str
    version: int
    occurred_at: datetime
    subject_key: str | None
    causation_of: int | None = None  # index of the Mapped this one follows from


@dataclass
class MappingContext:
    msg: Message
    ref: RawRef
    site: FeedConfig
    index: int = 0  # position in a batch file
    out: list[Mapped] = field(default_factory=list)
    patient_id: str | None = None
    # One message asks for the same status time once per resource: parse it once.
    _when_memo: dict[tuple[str, ...], tuple[int, datetime]] = field(default_factory=dict)

    @cached_property
    def msh(self) -> Segment:
        return self.msg.segments[0]

    @property
    def tz(self) -> str:
        return self.site.timezone

    @cached_property
    def sender(self) -> str:
        return f"{self.msh.get(3).strip()}^{self.msh.get(4).strip()}"

    @cached_property
    def facility(self) -> str:
        """Sending facility: the scope for identifiers that carry no assigning authority."""
        return self.msh.get(4).strip() or self.msh.get(4, 1, 2).strip() or self.msh.get(3).strip()

    @cached_property
    def message_time(self) -> Ts | None:
        return parse_ts(self.msh.get(7), self.tz)

    @property
    def mapping_version(self) -> str:
        return MAPPING_VERSION  # read at call time: tests and replays may swap it

    @cached_property
    def meta(self) -> Json:
        app, fac = uri_part(self.msh.get(3)) or "-", uri_part(self.msh.get(4)) or "-"
        control = uri_part(self.msg.control_id) or "-"
        return {
            "source": f"hl7v2://{app}/{fac}#{control}",
            "tag": [{"system": MAPPING_TAG_SYSTEM, "code": self.mapping_version}],
        }

    @property
    def patient_ref(self) -> Json | None:
        return {"reference": f"Patient/{self.patient_id}"} if self.patient_id else None

    def ts(self, value: str) -> Ts | None:
        return parse_ts(value, self.tz)

    def when(self, *values: str) -> tuple[int, datetime]:
        """Source time of a state: the first parseable of ``values``, else MSH-7, else the
        raw record's receive time (all deterministic for a given raw record)."""
        known = self._when_memo.get(values)
        if known is None:
            known = self._when_memo[values] = self._when(values)
        return known

    def _when(self, values: tuple[str, ...]) -> tuple[int, datetime]:
        for value in values:
            ts = parse_ts(value, self.tz) if value else None
            if ts is not None:
                return ts.epoch_ms, _from_ms(ts.epoch_ms)
        if self.message_time is not None:
            ms = self.message_time.epoch_ms
            return ms, _from_ms(ms)
        received = self.ref.received_at
        return int(received.timestamp() * 1000), received

    def emit(
        self,
        resource_type: str,
        rid: str,
        body: Json,
        event_type: str,
        when: tuple[int, datetime],
        rank: int = 0,
        subject_key: str | None = None,
    ) -> Mapped:
        resource: Json = {"resourceType": resource_type, "id": rid, "meta": self.meta, **body}
        mapped = Mapped(
            resource_type,
            resource,
            event_type,
            identity.version(when[0], rank),
            when[1],
            subject_key if subject_key is not None else self.patient_id,
        )
        self.out.append(mapped)
        return mapped


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def first(*segments: Segment | None) -> Segment | None:
    return next((s for s in segments if s is not None), None)
