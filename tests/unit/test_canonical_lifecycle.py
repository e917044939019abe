"""Lifecycle and determinism of the HL7 v2 -> canonical mapping (pure core, no Kafka)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import fastavro
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from fhirbus.consumers.canonicalizer import RawRef, SiteConfig, map_message
from fhirbus.schemas.envelope import CanonicalEvent, envelope_schema_str

SITE = SiteConfig()
SCHEMA = fastavro.parse_schema(orjson.loads(envelope_schema_str()))


def ref(offset: int = 7) -> RawRef:
    return RawRef("hl7.raw.v1", 1, offset, "lab", datetime(2026, 3, 1, 9, 15, tzinfo=UTC))


def oru(status: str, msh7: str, obr22: str, value: str = "5.4", control: str = "C1") -> bytes:
    return "\r".join([
        f"MSH|^~\\&|LIS|LAB|EHR|HOSP|{msh7}||ORU^R01^ORU_R01|{control}|P|2.5.1",
        "PID|1||12345^^^HOSP^MR||Doe^Jane||19800102|F",
        f"OBR|1|PL1|FL1^LIS|24331-1^Lipid panel^LN|||20260301080000|||||||||||||||{obr22}|||"
        f"{status}",
        f"OBX|1|NM|2093-3^Cholesterol^LN||{value}|mmol/L^^UCUM|3.0-5.2|N|||{status}",
    ]).encode()


def avro_bytes(event: CanonicalEvent) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, SCHEMA, event.to_avro())
    return out.getvalue()


def observation(events: list[CanonicalEvent]) -> CanonicalEvent:
    return next(e for e in events if e.resource_type == "Observation")


@settings(max_examples=60, deadline=None)
@given(
    status=st.sampled_from("PFCAXWDIOS"),
    value=st.decimals(min_value=-1000, max_value=1000, places=2).map(str),
    minute=st.integers(0, 59),
    control=st.text("ABCDEFGHIJ0123456789-", min_size=1, max_size=20),
)
def test_mapping_the_same_message_twice_gives_byte_identical_events(
    status: str, value: str, minute: int, control: str
) -> None:
    raw = oru(status, f"202603011{minute:03d}"[:12], "", value, control)
    first, second = map_message(raw, ref(), SITE), map_message(bytes(raw), ref(), SITE)
    assert [avro_bytes(e) for e in first] == [avro_bytes(e) for e in second]
    assert len({e.event_id for e in first}) == len(first)


@settings(max_examples=40, deadline=None)
@given(
    times=st.lists(st.integers(0, 10**6), min_size=3, max_size=3).map(sorted),
    same_time=st.booleans(),
)
def test_preliminary_final_corrected_are_three_increasing_versions(
    times: list[int], same_time: bool
) -> None:
    def at(seconds: int) -> str:
        return datetime.fromtimestamp(1_700_000_000 + seconds, UTC).strftime("%Y%m%d%H%M%S+0000")

    stamps = [at(times[0])] * 3 if same_time else [at(t) for t in times]
    results = [
        observation(map_message(oru(s, stamp, stamp, v, f"C{i}"), ref(i), SITE))
        for i, (s, stamp, v) in enumerate(zip("PFC", stamps, ("5.1", "5.4", "5.0"), strict=True))
    ]
    assert len({e.resource_id for e in results}) == 1
    versions = [e.resource_version for e in results]
    assert versions == sorted(versions) and len(set(versions)) == 3
    assert [e.event_type for e in results] == [
        "observation.preliminary", "observation.final", "observation.corrected"]
    assert [orjson.loads(e.resource)["status"] for e in results] == [
        "preliminary", "final", "corrected"]
    assert len({e.event_id for e in results}) == 3  # a correction never reuses an event id


def test_statuses_follow_the_v2_to_fhir_concept_map() -> None:
    expected = {"P": "preliminary", "F": "final", "C": "corrected", "A": "amended",
                "X": "cancelled", "W": "entered-in-error", "D": "entered-in-error",
                "I": "registered", "O": "registered", "S": "preliminary"}
    for code, status in expected.items():
        event = observation(map_message(oru(code, "20260301101500", ""), ref(), SITE))
        assert orjson.loads(event.resource)["status"] == status
        assert event.event_type == f"observation.{status}"


def test_reprocessing_at_another_offset_keeps_ids_and_versions() -> None:
    raw = oru("F", "20260301101500", "20260301101000")
    first, again = map_message(raw, ref(7), SITE), map_message(raw, ref(9000), SITE)
    assert [(e.event_id, e.resource_version, e.resource) for e in first] == [
        (e.event_id, e.resource_version, e.resource) for e in again]
    assert again[0].source.raw_offset == 9000


def test_every_resource_carries_provenance_and_the_mapping_version() -> None:
    events = map_message(oru("F", "20260301101500", ""), ref(), SITE)
    assert {e.resource_type for e in events} == {"Patient", "Observation", "DiagnosticReport"}
    for e in events:
        meta = orjson.loads(e.resource)["meta"]
        assert meta["source"] == "hl7v2://LIS/LAB#C1"
        assert meta["tag"][0]["code"] == e.mapping_version
        assert (e.source.raw_topic, e.source.raw_partition, e.source.raw_offset) == (
            "hl7.raw.v1", 1, 7)
        assert e.source.message_control_id == "C1" and e.source.feed == "lab"
        assert e.recorded_at == datetime(2026, 3, 1, 9, 15, tzinfo=UTC)
    patient = next(e for e in events if e.resource_type == "Patient")
    assert all(e.key == patient.resource_id for e in events)
