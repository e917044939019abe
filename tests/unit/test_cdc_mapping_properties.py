"""Properties of the CDC mapping over generated rows of the labbilling example: any valid
row maps to a resource that validates, the same change always yields the same ids, and an
update orders after the state it replaces."""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from fhirbus.consumers.canonicalizer.cdc import load_mappings, map_change
from fhirbus.consumers.canonicalizer.cdc import samples as s
from fhirbus.consumers.canonicalizer.cdc.debezium import Change, decode
from fhirbus.consumers.canonicalizer.validate import validate
from fhirbus.consumers.records import Record
from fhirbus.schemas.envelope import CanonicalEvent

MAPPINGS = load_mappings()
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1,
               max_size=30).filter(lambda t: t.strip() != "")
maybe_text = st.none() | st.text(max_size=30)  # blank strings read as absent
decimal_text = st.decimals(min_value=Decimal("-99999999.9999"), max_value=Decimal("99999999.9999"),
                           places=4, allow_nan=False, allow_infinity=False).map(str)
timestamps = st.datetimes(timezones=st.just(UTC)).map(
    lambda d: d.isoformat().replace("+00:00", "Z"))
versions = st.integers(min_value=0, max_value=2**40)
pks = st.integers(min_value=1, max_value=2**62)

patients = st.fixed_dictionaries({
    "id": pks, "mrn": text, "family_name": text, "given_name": maybe_text,
    "birth_date": st.none() | st.integers(-40000, 40000),
    "sex": st.none() | st.sampled_from("MFOU"),
    "active": st.booleans(), "row_version": versions, "updated_at": timestamps,
})
lab_results = st.fixed_dictionaries({
    "id": pks, "patient_id": pks, "loinc_code": text, "test_name": text,
    "value_numeric": st.none() | decimal_text, "value_text": maybe_text, "unit": maybe_text,
    "ref_low": st.none() | decimal_text, "ref_high": st.none() | decimal_text,
    "flag": st.none() | st.sampled_from(["L", "H", "N", "A", "LL", "HH"]),
    "status": st.sampled_from("PFCX"), "collected_at": timestamps, "comment": maybe_text,
    "row_version": versions, "updated_at": timestamps,
})
charges = st.fixed_dictionaries({
    "id": pks, "patient_id": pks, "encounter_number": maybe_text, "charge_code": text,
    "description": maybe_text, "quantity": st.integers(-1000, 1000),
    "unit_price": st.decimals(min_value=Decimal("-99999999.99"),
                              max_value=Decimal("99999999.99"), places=2).map(str),
    "currency": st.sampled_from(["USD", "EUR", "CHF"]),
    "status": st.sampled_from(["billable", "billed", "cancelled"]),
    "service_date": st.integers(-40000, 40000), "row_version": versions,
    "updated_at": timestamps,
})
TABLES = {"patients": patients, "lab_results": lab_results, "charges": charges}
rows = st.sampled_from(sorted(TABLES)).flatmap(lambda t: st.tuples(st.just(t), TABLES[t]))


def mapped(table: str, value: dict[str, Any], offset: int = 0) -> CanonicalEvent:
    rec = Record.detached(f"cdc.labbilling.labbilling.{table}", 0, offset, s.encode(value),
                          orjson.dumps({"id": (value["after"] or value["before"])["id"]}))
    change = decode(rec.raw, rec.key)
    assert isinstance(change, Change)
    (event,) = map_change(change, MAPPINGS, rec)
    return event


@settings(max_examples=150, deadline=None)
@given(rows, st.sampled_from(["c", "r", "u", "d"]), st.integers(0, 2**40))
def test_any_valid_row_maps_to_a_valid_resource_deterministically(
    table_row: tuple[str, dict[str, Any]], op: str, lsn: int
) -> None:
    table, row = table_row
    value = s.change(table, op, row if op == "d" else None, None if op == "d" else row, lsn=lsn)
    first, again = mapped(table, value), mapped(table, value, offset=123)
    validate(orjson.loads(first.resource))  # map_change validated it; the bytes agree
    assert (first.event_id, first.resource_id, first.resource_version, first.resource) == (
        again.event_id, again.resource_id, again.resource_version, again.resource)
    assert first.resource_id == orjson.loads(first.resource)["id"]


@settings(max_examples=60, deadline=None)
@given(rows)
def test_an_update_and_then_a_delete_each_order_after_the_previous_state(
    table_row: tuple[str, dict[str, Any]],
) -> None:
    table, row = table_row
    newer = {**row, "row_version": row["row_version"] + 1}
    v1 = mapped(table, s.change(table, "c", None, row))
    v2 = mapped(table, s.change(table, "u", row, newer))
    gone = mapped(table, s.change(table, "d", newer, None))
    key_only = mapped(table, s.change(table, "d", {"id": row["id"]}, None))
    assert v1.resource_version < v2.resource_version < gone.resource_version
    assert gone.resource_version < key_only.resource_version
    assert len({v1.event_id, v2.event_id, gone.event_id, key_only.event_id}) == 4
    assert len({v1.resource_id, v2.resource_id, gone.resource_id, key_only.resource_id}) == 1
