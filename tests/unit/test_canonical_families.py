"""Per-family mapping rules: ADT state transitions, merges, orders, datatypes, dead letters."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from fhirbus.consumers.canonicalizer import RawRef, SiteConfig, map_message
from fhirbus.consumers.canonicalizer.datatypes import parse_ts
from fhirbus.consumers.canonicalizer.errors import (
    InvalidFhirResource,
    MissingRequiredField,
    ParseFailure,
    UnsupportedMessageType,
)
from fhirbus.consumers.canonicalizer.identity import fast_stable_id
from fhirbus.schemas.envelope import CanonicalEvent, stable_id

SITE = SiteConfig()
REF = RawRef("hl7.raw.v1", 0, 1, "adt", datetime(2026, 1, 1, tzinfo=UTC))


def adt(trigger: str, evn_time: str, pv1_extra: str = "", control: str = "A1") -> bytes:
    return "\r".join([
        f"MSH|^~\\&|ADT|HOSP|EHR|HOSP|{evn_time}||ADT^{trigger}|{control}|P|2.5",
        f"EVN|{trigger}|{evn_time}",
        "PID|1||555^^^HOSP^MR~999-11-2222^^^SSA^SS||Roe^Rick^B||19700203|M|||"
        "1 Main St^^Town^ST^12345",
        f"PV1|1|I|W1^101^A^HOSP|||W0^001^B^HOSP||||MED|||||||||V77^^^HOSP^VN|{pv1_extra}",
    ]).encode()


def by_type(events: list[CanonicalEvent], rtype: str) -> list[dict]:
    return [orjson.loads(e.resource) for e in events if e.resource_type == rtype]


def test_admit_discharge_and_cancel_discharge_move_one_encounter_through_its_states() -> None:
    discharge_fields = "|" * 24 + "20260105120000|20260106090000"
    admit = map_message(adt("A01", "20260105120000"), REF, SITE)
    discharge = map_message(adt("A03", "20260106090000", discharge_fields, "A2"), REF, SITE)
    undo = map_message(adt("A13", "20260106093000", discharge_fields, "A3"), REF, SITE)
    encounters = [next(e for e in evs if e.resource_type == "Encounter")
                  for evs in (admit, discharge, undo)]
    assert len({e.resource_id for e in encounters}) == 1
    assert [e.event_type for e in encounters] == [
        "encounter.admitted", "encounter.discharged", "encounter.discharge-cancelled"]
    bodies = [orjson.loads(e.resource) for e in encounters]
    assert [b["status"] for b in bodies] == ["in-progress", "finished", "in-progress"]
    assert bodies[1]["period"]["end"] == "2026-01-06T09:00:00Z"
    assert "end" not in bodies[2]["period"]  # the cancelled discharge is reversed
    assert bodies[0]["class"]["code"] == "IMP"
    versions = [e.resource_version for e in encounters]
    assert versions == sorted(versions)


def test_cancel_admit_cancels_and_transfer_records_the_prior_location() -> None:
    cancel = by_type(map_message(adt("A11", "20260105130000"), REF, SITE), "Encounter")[0]
    assert cancel["status"] == "cancelled"
    transfer = by_type(map_message(adt("A02", "20260105140000"), REF, SITE), "Encounter")[0]
    assert [loc["status"] for loc in transfer["location"]] == ["active", "completed"]


def test_person_level_triggers_map_the_patient_only() -> None:
    events = map_message(adt("A28", "20260105120000"), REF, SITE)
    assert [e.event_type for e in events] == ["patient.registered"]
    patient = orjson.loads(events[0].resource)
    assert patient["name"] == [{"family": "Roe", "given": ["Rick", "B"]}]
    assert patient["gender"] == "male" and patient["birthDate"] == "1970-02-03"
    assert {"value": "555", "system": "urn:fhirbus:authority:HOSP"}.items() <= (
        patient["identifier"][0].items())


def test_merge_publishes_the_survivor_with_replaces_and_retires_the_old_patient() -> None:
    raw = "\r".join([
        "MSH|^~\\&|ADT|HOSP|EHR|HOSP|20260105120000||ADT^A40^ADT_A39|M1|P|2.5",
        "EVN|A40|20260105120000",
        "PID|1||555^^^HOSP^MR||Roe^Rick",
        "MRG|444^^^HOSP^MR",
    ]).encode()
    events = map_message(raw, REF, SITE)
    merged, retired = events
    assert (merged.event_type, retired.event_type) == ("patient.merged", "patient.retired")
    survivor, old = orjson.loads(merged.resource), orjson.loads(retired.resource)
    assert survivor["link"] == [{"other": {"reference": f"Patient/{retired.resource_id}"},
                                 "type": "replaces"}]
    assert old["active"] is False and old["link"][0]["type"] == "replaced-by"
    assert retired.key == retired.resource_id and merged.key == merged.resource_id
    assert retired.causation_id == merged.event_id


def test_order_cancel_revokes_the_service_request(corpus_dir: Path) -> None:
    raw = (corpus_dir / "hl7v2/orm/msft-OML-O21-03.hl7").read_bytes()
    orders = [e for e in map_message(raw, REF, SITE) if e.resource_type == "ServiceRequest"]
    assert [e.event_type for e in orders][-1] == "servicerequest.cancelled"
    assert orjson.loads(orders[-1].resource)["status"] == "revoked"
    # The others are ORC-1 SC (status changed) with ORC-5 CM: completed, not cancelled.
    assert {orjson.loads(e.resource)["status"] for e in orders[:-1]} == {"completed"}


@pytest.mark.parametrize(("raw", "error", "text"), [
    (b"MSH|^~\\&|A|B|C|D|2026||ACK|1|P|2.5\rMSA|AA|1",
     UnsupportedMessageType, "reason=unsupported_message_type path=MSH-9 detail=ACK"),
    (b"PID|1||x", ParseFailure, "reason=parse_error path=segment[1] detail=no_msh"),
    (b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5\rPID|1||||Secret^Name",
     MissingRequiredField, "reason=missing_required_field path=PID-3"),
])
def test_dead_letter_reasons_name_the_path_but_no_values(
    raw: bytes, error: type[Exception], text: str
) -> None:
    with pytest.raises(error) as caught:
        map_message(raw, REF, SITE)
    assert str(caught.value).startswith(text)
    assert "Secret" not in str(caught.value)


def test_an_invalid_resource_is_refused_with_the_failing_path() -> None:
    site = SiteConfig.model_validate({"default": {"field_overrides": [
        {"resource": "Patient", "element": "birthDate", "value": "not-a-date"}]}})
    with pytest.raises(InvalidFhirResource) as caught:
        map_message(adt("A28", "20260105120000"), REF, site)
    assert str(caught.value) == "reason=invalid_fhir_resource path=Patient.birthDate " \
                                "detail=value_error"


def test_timestamps_keep_precision_and_take_the_feed_zone_when_none_is_given() -> None:
    assert parse_ts("2026", "UTC").fhir == "2026"  # type: ignore[union-attr]
    assert parse_ts("202603", "UTC").fhir == "2026-03"  # type: ignore[union-attr]
    assert parse_ts("201203141259-0215", "UTC").fhir == "2012-03-14T12:59:00-02:15"  # type: ignore[union-attr]
    assert parse_ts("20260301101500", "Europe/Berlin").fhir == (  # type: ignore[union-attr]
        "2026-03-01T10:15:00+01:00")
    assert parse_ts("20210817151943.4+0200", "UTC").fhir == (  # type: ignore[union-attr]
        "2021-08-17T15:19:43.400+02:00")
    assert parse_ts("200803061000 ", "UTC").fhir == "2008-03-06T10:00:00Z"  # type: ignore[union-attr]
    assert parse_ts("20261340", "UTC") is None and parse_ts("garbage", "UTC") is None


def test_the_fast_id_is_exactly_the_envelope_stable_id() -> None:
    for parts in (("a", None, 1), ("hl7v2", "Patient", "urn:oid:1.2", "ÄÖ 123"), ()):
        assert fast_stable_id(*parts) == stable_id(*parts)


def test_two_messages_stating_one_patient_at_one_time_do_not_share_an_event_id() -> None:
    # Regression (found by the projection property test): two messages with the same
    # timestamp gave the same event id with different content (meta.source), so the read
    # model kept whichever arrived first.
    first = map_message(adt("A08", "20260301120000", control="M1"), REF, SITE)
    second = map_message(adt("A08", "20260301120000", control="M6"), REF, SITE)
    (p1,), (p2,) = ([e for e in evs if e.resource_type == "Patient"] for evs in (first, second))
    assert (p1.resource_id, p1.resource_version) == (p2.resource_id, p2.resource_version)
    assert p1.resource != p2.resource
    assert p1.event_id != p2.event_id
    again = map_message(adt("A08", "20260301120000", control="M1"), REF, SITE)
    assert [e.event_id for e in again] == [e.event_id for e in first]
