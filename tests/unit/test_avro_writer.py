"""The generated envelope writer writes exactly fastavro's bytes, or declines the schema."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import fastavro
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhirbus.schemas.avro_writer import compile_writer
from fhirbus.schemas.envelope import CanonicalEvent, Source, envelope_schema_str

SCHEMA = orjson.loads(envelope_schema_str())
PARSED = fastavro.parse_schema(SCHEMA)
WRITE = compile_writer(SCHEMA, CanonicalEvent)

_longs = st.integers(-(1 << 63), (1 << 63) - 1)
_ints = st.integers(-(1 << 31), (1 << 31) - 1)
_text = st.text(max_size=30)
_opt_text = st.none() | _text
_when = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),
                     timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5, minutes=-30))]))

_sources = st.builds(
    Source, kind=_text, system=_text, feed=_text, message_control_id=_opt_text,
    message_type=_opt_text, lsn=_opt_text, tx_id=st.none() | _longs, table=_opt_text,
    raw_topic=_opt_text, raw_partition=st.none() | _ints, raw_offset=st.none() | _longs)

_events = st.builds(
    CanonicalEvent, event_id=_text, event_type=_text, resource_type=_text, resource_id=_text,
    resource_version=_longs, occurred_at=_when, recorded_at=_when | st.integers(0, 1 << 42),
    source=_sources, mapping_version=_text, resource=st.binary(max_size=300),
    subject_key=_opt_text, schema_version=_ints, correlation_id=_opt_text,
    causation_id=_opt_text, data_classification=_text, content_type=_text)


def _fastavro(event: CanonicalEvent) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, PARSED, event.to_avro())
    return buf.getvalue()


@settings(max_examples=400, deadline=None)
@given(_events)
def test_generated_writer_matches_fastavro_byte_for_byte(event: CanonicalEvent) -> None:
    assert WRITE is not None
    assert WRITE(event) == _fastavro(event)


def test_naive_timestamps_are_written_as_fastavro_writes_them() -> None:
    assert WRITE is not None
    at = datetime(2026, 3, 1, 10, 0, 0, 123999)  # fastavro reads naive values as local time
    event = _sample(at)
    assert WRITE(event) == _fastavro(event)


def test_out_of_range_values_fail_instead_of_wrapping() -> None:
    assert WRITE is not None
    with pytest.raises(ValueError, match="long"):
        WRITE(_sample(datetime(2026, 1, 1, tzinfo=UTC), version=1 << 63))
    with pytest.raises(ValueError, match="int"):
        WRITE(_sample(datetime(2026, 1, 1, tzinfo=UTC), partition=1 << 31))
    with pytest.raises(AttributeError):
        WRITE(_sample(datetime(2026, 1, 1, tzinfo=UTC), event_id=7))


@dataclass
class _Other:
    tags: list[str]
    score: float


@pytest.mark.parametrize("field", [
    {"name": "tags", "type": {"type": "array", "items": "string"}},
    {"name": "score", "type": "double"},
    {"name": "tags", "type": ["null", "string", "long"]},
    {"name": "missing", "type": "string"},
])
def test_constructs_it_does_not_know_leave_the_schema_to_fastavro(field: dict) -> None:
    schema = {"type": "record", "name": "Other", "fields": [field]}
    assert compile_writer(schema, _Other) is None


def _sample(at: datetime, version: int = 1, partition: int | None = 0,
            event_id: object = "e") -> CanonicalEvent:
    return CanonicalEvent(
        event_id=event_id, event_type="observation.final",  # type: ignore[arg-type]
        resource_type="Observation", resource_id="r", resource_version=version,
        occurred_at=at, recorded_at=at,
        source=Source(kind="hl7v2", system="LAB", feed="f", raw_partition=partition),
        mapping_version="m", resource=b"{}")
