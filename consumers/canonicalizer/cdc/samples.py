"""Debezium change events for the labbilling example, built the way the PostgreSQL
connector (JsonConverter, ``decimal.handling.mode=string``) writes them. Used by tests,
benchmarks and demos; every value is synthetic."""

from __future__ import annotations

from typing import Any

import orjson

SOURCE = "labbilling"


def patient_row(pid: int, version: int = 1, **over: Any) -> dict[str, Any]:
    row = {"id": pid, "mrn": f"MRN{pid:06d}", "family_name": "Testpatient",
           "given_name": "Alex", "birth_date": 3653, "sex": "F", "active": True,
           "row_version": version, "updated_at": f"2026-03-01T10:{version % 60:02d}:00Z"}
    return {**row, **over}


def lab_row(rid: int, patient: int, version: int = 1, **over: Any) -> dict[str, Any]:
    row = {"id": rid, "patient_id": patient, "loinc_code": "2345-7", "test_name": "Glucose",
           "value_numeric": "5.4000", "value_text": None, "unit": "mmol/L",
           "ref_low": "3.9000", "ref_high": "5.6000", "flag": "N", "status": "F",
           "collected_at": "2026-03-01T08:00:00Z", "comment": None,
           "row_version": version, "updated_at": f"2026-03-01T11:{version % 60:02d}:00Z"}
    return {**row, **over}


def charge_row(cid: int, patient: int, version: int = 1, **over: Any) -> dict[str, Any]:
    row = {"id": cid, "patient_id": patient, "encounter_number": "V100", "charge_code": "LAB01",
           "description": "Glucose test", "quantity": 2, "unit_price": "12.50",
           "currency": "USD", "status": "billable", "service_date": 20513,
           "row_version": version, "updated_at": f"2026-03-01T12:{version % 60:02d}:00Z"}
    return {**row, **over}


def change(table: str, op: str, before: dict[str, Any] | None, after: dict[str, Any] | None,
           *, lsn: int = 1000, tx: int = 500, snapshot: str = "false",
           source: str = SOURCE, commit_ms: int = 1_772_359_200_000) -> dict[str, Any]:
    return {
        "before": before, "after": after, "op": op, "ts_ms": commit_ms + 5,
        "transaction": None,
        "source": {"version": "2.7.0.Final", "connector": "postgresql",
                   "name": f"cdc.{source}", "ts_ms": commit_ms, "snapshot": snapshot,
                   "db": "test", "schema": "labbilling", "table": table, "txId": tx,
                   "lsn": lsn, "xmin": None},
    }


def encode(value: dict[str, Any] | None, *, with_schema: bool = False) -> bytes | None:
    """JsonConverter bytes; ``with_schema`` wraps the payload as schemas.enable=true does."""
    if value is None:
        return None
    if with_schema:
        value = {"schema": {"type": "struct", "optional": False, "name": "Envelope"},
                 "payload": value}
    return orjson.dumps(value)


def key(pk: int) -> bytes:
    return orjson.dumps({"id": pk})
