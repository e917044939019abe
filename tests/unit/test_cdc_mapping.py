"""CDC -> canonical FHIR: the labbilling example mappings on hand-built Debezium events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from fhirbus.consumers.canonicalizer.cdc import CdcHandler, load_mappings, map_change
from fhirbus.consumers.canonicalizer.cdc import samples as s
from fhirbus.consumers.canonicalizer.cdc.debezium import Skip, decode
from fhirbus.consumers.canonicalizer.cdc.errors import (
    BadColumnValue,
    MissingIdentity,
    NotAChangeEvent,
    UnavailableValue,
    UnmappedCode,
    UnmappedTable,
    UnsupportedOperation,
)
from fhirbus.consumers.canonicalizer.cdc.load import EXAMPLE_MAPPINGS
from fhirbus.consumers.canonicalizer.cdc.mapper import RETIRED_VERSION, row_id
from fhirbus.consumers.canonicalizer.errors import InvalidFhirResource
from fhirbus.consumers.canonicalizer.validate import validate
from fhirbus.consumers.records import Record
from fhirbus.projections import billing, ehr
from fhirbus.schemas.envelope import CanonicalEvent
from fhirbus.settings import ConfigError

MAPPINGS = load_mappings()


def record(table: str, value: dict[str, Any] | None, pk: int = 1, offset: int = 7,
           with_schema: bool = False) -> Record:
    return Record.detached(f"cdc.labbilling.labbilling.{table}", 2, offset,
                           s.encode(value, with_schema=with_schema), s.key(pk))


def one(table: str, value: dict[str, Any], pk: int = 1, **kw: Any) -> CanonicalEvent:
    rec = record(table, value, pk, **kw)
    change = decode(rec.raw, rec.key)
    assert not isinstance(change, Skip)
    (event,) = map_change(change, MAPPINGS, rec)
    validate(orjson.loads(event.resource))
    return event


def body(event: CanonicalEvent) -> dict[str, Any]:
    return orjson.loads(event.resource)


def test_each_example_table_maps_to_a_valid_resource_with_provenance() -> None:
    patient = one("patients", s.change("patients", "c", None, s.patient_row(1)))
    lab = one("lab_results", s.change("lab_results", "c", None, s.lab_row(7, 1)), 7)
    charge = one("charges", s.change("charges", "c", None, s.charge_row(9, 1)), 9)
    assert (patient.resource_type, lab.resource_type, charge.resource_type) == (
        "Patient", "Observation", "ChargeItem")
    pid = row_id("labbilling", "labbilling.patients", "1")
    assert patient.resource_id == pid and patient.key == pid
    assert lab.key == pid and charge.key == pid  # one patient's events share a partition key
    assert body(lab)["subject"] == {"reference": f"Patient/{pid}"}
    assert body(patient)["identifier"][0]["type"]["coding"][0]["code"] == "MR"
    assert body(lab)["status"] == "final" and lab.event_type == "observation.final"
    assert body(charge)["priceOverride"] == {"value": 25, "currency": "USD"}  # 2 x 12.50
    src = lab.source
    assert (src.kind, src.system, src.table, src.lsn, src.tx_id) == (
        "cdc", "labbilling", "labbilling.lab_results", "1000", 500)
    assert (src.raw_topic, src.raw_partition, src.raw_offset) == (
        "cdc.labbilling.labbilling.lab_results", 2, 7)
    assert lab.mapping_version == "cdc-labbilling.lab_results-1.0.0"
    assert lab.resource_version == 1 and lab.occurred_at.isoformat() == "2026-03-01T11:01:00+00:00"


def test_padded_code_columns_are_normalized_not_dead_lettered() -> None:
    """Regression (found by the property test): a unit column ending in a carriage return
    made valueQuantity.code fail FHIR's code pattern and dead-lettered a good result."""
    row = s.lab_row(7, 1, unit="mg/dL\r", loinc_code=" 2345-7  ", test_name="Glucose  ")
    lab = body(one("lab_results", s.change("lab_results", "c", None, row), 7))
    assert lab["valueQuantity"]["code"] == "mg/dL"
    assert lab["code"]["coding"][0]["code"] == "2345-7"
    assert lab["valueQuantity"]["unit"] == "mg/dL\r"  # a string keeps what the source said


def test_redelivery_and_snapshot_overlap_give_the_same_event() -> None:
    row = s.lab_row(7, 1, version=3)
    streamed = one("lab_results", s.change("lab_results", "u", None, row, lsn=2000), 7)
    again = one("lab_results", s.change("lab_results", "u", None, row, lsn=2000), 7, offset=99)
    snap = one("lab_results", s.change("lab_results", "r", None, row, lsn=9000, snapshot="last"),
               7, offset=3)
    assert streamed.event_id == again.event_id == snap.event_id
    assert streamed.resource == snap.resource
    assert streamed.resource_version == snap.resource_version == 3


def test_an_update_orders_after_the_state_it_replaces() -> None:
    v1 = one("lab_results", s.change("lab_results", "c", None, s.lab_row(7, 1, status="P")), 7)
    v2 = one("lab_results", s.change("lab_results", "u", s.lab_row(7, 1, status="P"),
                                     s.lab_row(7, 1, version=2, status="C")), 7)
    assert v2.resource_version > v1.resource_version and v2.event_id != v1.event_id
    assert v1.resource_id == v2.resource_id and v2.event_type == "observation.corrected"


@pytest.mark.parametrize("with_schema", [False, True])
def test_schema_payload_envelope_is_accepted(with_schema: bool) -> None:
    plain = one("patients", s.change("patients", "c", None, s.patient_row(1)))
    wrapped = one("patients", s.change("patients", "c", None, s.patient_row(1)),
                  with_schema=with_schema)
    assert plain.event_id == wrapped.event_id


def test_delete_with_full_before_image_retires_one_version_later() -> None:
    row = s.lab_row(7, 1, version=4)
    event = one("lab_results", s.change("lab_results", "d", row, None), 7)
    assert event.event_type == "observation.deleted" and event.resource_version == 5
    assert body(event)["status"] == "entered-in-error"
    assert body(event)["code"]["coding"][0]["code"] == "2345-7"  # the row is still described
    patient = one("patients", s.change("patients", "d", s.patient_row(1, version=2), None))
    assert body(patient)["active"] is False and patient.event_type == "patient.retired"


@pytest.mark.parametrize("before", [
    {"id": 9}, {k: (9 if k == "id" else None) for k in s.charge_row(9, 1)}, None,
], ids=["key-in-before", "key-and-nulls", "kafka-key-only"])
def test_key_only_delete_still_retires(before: dict[str, Any] | None) -> None:
    live = one("charges", s.change("charges", "c", None, s.charge_row(9, 1)), 9)
    gone = one("charges", s.change("charges", "d", before, None), 9)
    assert gone.resource_id == live.resource_id
    assert gone.resource_version == RETIRED_VERSION > live.resource_version
    assert body(gone)["status"] == "entered-in-error"
    assert "priceOverride" not in body(gone)


def test_retirement_reaches_the_read_models() -> None:
    charge = one("charges", s.change("charges", "c", None, s.charge_row(9, 1)), 9)
    gone = one("charges", s.change("charges", "d", {"id": 9}, None), 9)
    project = billing.make_project(billing.BillingOptions(order_prices={}))
    versions = [(e.resource_version, e.event_id, orjson.loads(project(e)[0].payload))
                for e in (charge, gone)]
    kinds = [(r[4], r[5]) for r in billing.ledger_entries("ChargeItem/x", versions)]
    assert kinds == [("charge", 2500), ("reversal", -2500)]  # net zero: not owed any more
    result = one("lab_results", s.change("lab_results", "d", {"id": 7}, None), 7)
    assert ehr.project(result)[0].status == "entered-in-error"
    patient = one("patients", s.change("patients", "d", {"id": 1}, None))
    assert ehr.project(patient)[0].status == "inactive"


def test_records_without_a_row_change_are_skipped_and_counted() -> None:
    handler = CdcHandler(MAPPINGS)
    assert handler(record("lab_results", None)) == []  # tombstone after a delete
    msg = {"op": "m", "source": {"name": "cdc.labbilling", "table": ""},
           "message": {"prefix": "p", "content": "e30="}}
    assert handler(Record.detached("cdc.labbilling.message", 0, 1, orjson.dumps(msg))) == []
    begin = {"status": "BEGIN", "id": "571:53195829", "event_count": None}
    assert handler(Record.detached("cdc.labbilling.transaction", 0, 1,
                                   orjson.dumps(begin))) == []
    assert handler.skipped == {"tombstone": 1, "message": 1, "transaction": 1}


def _fails(table: str, value: dict[str, Any], raw: bytes | None = None) -> Exception:
    rec = record(table, value)
    if raw is not None:
        rec = Record.detached(rec.topic, 0, 1, raw, s.key(1))
    with pytest.raises(Exception) as info:
        CdcHandler(MAPPINGS)(rec)
    return info.value


@pytest.mark.parametrize(("table", "value", "error", "path"), [
    ("audit_log", s.change("audit_log", "c", None, {"actor": "a", "action": "b"}),
     UnmappedTable, "labbilling.audit_log"),
    ("lab_results", s.change("lab_results", "t", None, None), UnsupportedOperation, "op"),
    ("lab_results", s.change("lab_results", "u", None, s.lab_row(
        7, 1, comment="__debezium_unavailable_value")), UnavailableValue,
     "labbilling.lab_results.comment"),
    ("lab_results", s.change("lab_results", "c", None, s.lab_row(7, 1, status="Q")),
     UnmappedCode, "labbilling.lab_results.status"),
    ("lab_results", s.change("lab_results", "c", None, s.lab_row(7, 1, value_numeric="AAE=")),
     BadColumnValue, "labbilling.lab_results.value_numeric"),
    ("lab_results", s.change("lab_results", "c", None, s.lab_row(7, 1, status=None)),
     InvalidFhirResource, "Observation.status"),
    ("patients", s.change("patients", "c", None, s.patient_row(1, row_version=None)),
     BadColumnValue, "labbilling.patients.row_version"),
    ("patients", s.change("patients", "c", None, {"id": 1}), BadColumnValue,
     "labbilling.patients.mrn"),
])
def test_bad_changes_are_permanent_errors_naming_reason_and_column(
    table: str, value: dict[str, Any], error: type[Exception], path: str
) -> None:
    exc = _fails(table, value)
    assert isinstance(exc, error)
    assert f"path={path}" in str(exc) and "reason=" in str(exc)
    assert "MRN" not in str(exc) and "Glucose" not in str(exc)  # no row values (PHI)


def test_not_json_and_no_identity_are_permanent_errors() -> None:
    assert isinstance(_fails("patients", {}, b"\x00not json"), NotAChangeEvent)
    rec = Record.detached("cdc.labbilling.labbilling.patients", 0, 1,
                          s.encode(s.change("patients", "d", None, None)), None)
    with pytest.raises(MissingIdentity):
        CdcHandler(MAPPINGS)(rec)


def _write(folder: Path, name: str, text: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)


def test_mapping_errors_stop_the_load_naming_file_and_key(tmp_path: Path) -> None:
    good = (EXAMPLE_MAPPINGS / "charges.yaml").read_text()
    patients = (EXAMPLE_MAPPINGS / "patients.yaml").read_text()
    cases = {
        "bad-key": (good.replace("business_version:", "busines_version:"), "busines_version"),
        "bad-resource": (good.replace("resource: ChargeItem", "resource: Invoice"), "resource"),
        "bad-element": (good.replace("code.text: description", "code.txt: description"),
                        "a sample insert does not map to a valid ChargeItem"),
        "no-key-only": (good.split("  key_only:")[0], "key-only delete"),
        "unmapped-ref": (good, "labbilling.patients has no mapping"),
    }
    for label, (text, expected) in cases.items():
        folder = tmp_path / label
        _write(folder, "charges.yaml", text)
        if label != "unmapped-ref":
            _write(folder, "patients.yaml", patients)
        with pytest.raises(ConfigError) as info:
            load_mappings(folder)
        assert "charges.yaml" in str(info.value) and expected in str(info.value), label
    with pytest.raises(ConfigError, match="holds no"):
        load_mappings(tmp_path)


def test_identifier_ids_match_the_hl7_path_for_the_same_system(tmp_path: Path) -> None:
    from fhirbus.consumers.canonicalizer import identity

    text = (EXAMPLE_MAPPINGS / "patients.yaml").read_text().replace(
        "key: [id]", "key: [id]\nid: {identifier: mrn}")
    _write(tmp_path / "m", "patients.yaml", text)
    mappings = load_mappings(tmp_path / "m")
    rec = record("patients", s.change("patients", "c", None, s.patient_row(1)))
    change = decode(rec.raw, rec.key)
    assert not isinstance(change, Skip)
    (event,) = map_change(change, mappings, rec)
    assert event.resource_id == identity.resource_id(
        "Patient", "https://hospital.example/fhir/sid/mrn", "MRN000001")
