"""Acceptance: injected drift of every kind is found by one ``reconcile run``, repaired by
replay events (or worklisted by risk), and the next run reports zero drift.

Embedded broker, SQLite EHR read model, a private PostgreSQL database as the CDC source."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from fhirbus.consumers.canonicalizer import app as canon
from fhirbus.consumers.canonicalizer import load_site_config
from fhirbus.consumers.canonicalizer.cdc import load_mappings, map_change
from fhirbus.consumers.canonicalizer.cdc.debezium import Change
from fhirbus.consumers.runtime import ConsumerRuntime
from fhirbus.kafka.config import producer_config, resolve_registry_url
from fhirbus.kafka.producer import Producer
from fhirbus.projections import app as papp
from fhirbus.projections import testing
from fhirbus.reconciliation import cdc
from fhirbus.reconciliation.rangehash import PgReader
from fhirbus.reconciliation.replay import replay_item
from fhirbus.reconciliation.runner import run_once
from fhirbus.reconciliation.worklist import Worklist
from fhirbus.schemas.serde import EnvelopeSerde, registry_client
from fhirbus.schemas.topics import RAW_HL7, canonical_topic
from fhirbus.settings import Settings, load_settings

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "connectors" / "examples" / "labbilling"


@pytest.fixture
def source_dsn() -> Iterator[str]:
    if why := testing.pg_available():
        pytest.skip(why)
    import psycopg

    name = f"fb_reconcile_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(testing.PG_BASE_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = testing.PG_BASE_DSN.rsplit("/", 1)[0] + f"/{name}"
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute((LAB / "schema.sql").read_text())
            conn.execute("INSERT INTO labbilling.patients (id, mrn, family_name, given_name, "
                         "birth_date, sex) SELECT g, 'LB' || g, 'Fam' || g, 'Giv', "
                         "'1970-01-01'::date + g, 'F' FROM generate_series(1, 5) g")
            conn.execute("INSERT INTO labbilling.lab_results (id, patient_id, loinc_code, "
                         "test_name, value_numeric, unit, status, collected_at) SELECT g, g, "
                         "'2345-7', 'Glucose', 5.1 + g, 'mmol/L', 'F', now() "
                         "FROM generate_series(1, 5) g")
            conn.execute("INSERT INTO labbilling.charges (id, patient_id, charge_code, "
                         "description, quantity, unit_price, status, service_date) SELECT g, "
                         "g, 'LAB' || g, 'Panel', g, 12.5, 'billable', '2026-03-01' "
                         "FROM generate_series(1, 3) g")
        yield dsn
    finally:
        with psycopg.connect(testing.PG_BASE_DSN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dsn: str) -> Settings:
    sources = tmp_path / "sources.yaml"
    sources.write_text((LAB / "sources.yaml").read_text())
    monkeypatch.setenv("FHIRBUS_CDC_LABBILLING_DSN", dsn)
    monkeypatch.setenv("FHIRBUS_CDC__SOURCES_FILE", str(sources))
    monkeypatch.setenv("FHIRBUS_RECONCILE__DSN", f"sqlite://{tmp_path / 'wl.sqlite'}")
    monkeypatch.setenv("FHIRBUS_RECONCILE__REPORT_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("FHIRBUS_PROJECTIONS__DSN", f"sqlite://{tmp_path / 'ehr.sqlite'}")
    return load_settings()


def _publish_cdc_snapshot(settings: Settings, dsn: str) -> None:
    """What the CDC path would have published for the initial rows (a snapshot)."""
    mappings = load_mappings(None)
    serde = EnvelopeSerde(registry_client(resolve_registry_url(settings)))
    producer = Producer(producer_config(settings))
    reader = PgReader(dsn)
    try:
        for check in cdc.LABBILLING:
            table = check.table.split(".")[1]
            m = mappings.get(check.table)
            side = cdc.source_side("labbilling", m, check)
            for row in cdc.source_rows(reader, side, _all_ids(reader, side)).values():
                change = Change("r", None, row, None, "labbilling", "labbilling", table, 1, 1,
                                1_700_000_000_000, 1_700_000_000_000, True)
                ref = SimpleNamespace(topic=f"cdc.labbilling.labbilling.{table}", partition=0,
                                      offset=0, timestamp_ms=1_700_000_000_000)
                for e in map_change(change, mappings, ref):
                    topic = canonical_topic(e.resource_type)
                    producer.send(topic, serde.serialize(e, topic), e.key).result(30)
    finally:
        reader.close()
        producer.close()


def _all_ids(reader: PgReader, side: cdc.rangehash.Side) -> set[str]:
    return {k for k, _, _ in cdc.rangehash.stream(reader, side)}


def _raw(settings: Settings, messages: list[str]) -> None:
    producer = Producer(producer_config(settings))
    for text in messages:
        raw = text.strip().replace("\n", "\r").encode()
        producer.send(RAW_HL7, raw, b"default").result(30)
    producer.close()


def _withhold_canonical_events(settings: Settings) -> None:
    """Canonical events withheld: the canonicalizer group moves past raw records with a
    handler that drops what it mapped (a bug, a lost publish)."""
    spec = replace(canon.build_spec(settings, load_site_config(None)), handler=lambda _r: [])
    ConsumerRuntime(spec, settings).run(idle_exit_s=2.0)


def _project(settings: Settings) -> None:
    for name in ("ehr", "billing"):
        papp.run(name, settings, idle_exit_s=2.0, install_signals=False)


def _ehr(tmp_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(tmp_path / "ehr.sqlite", isolation_level=None)


def test_injected_drift_is_found_repaired_and_converges(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source_dsn: str
) -> None:
    settings = _settings(monkeypatch, tmp_path, source_dsn)
    _raw(settings, [testing._adt(f"RC{n:04d}", f"V{n}", 20260301000000 + n, f"RCA{n}")
                    for n in range(3)]
         + [testing._oru("RC0000", "RO1", "F", 20260301010000, "4.2", "RCO1")])
    canon.run(settings, load_site_config(None), idle_exit_s=2.0, install_signals=False)
    _raw(settings, [testing._adt("RCW001", "VW", 20260302000000, "RCW1")])
    _withhold_canonical_events(settings)
    _publish_cdc_snapshot(settings, source_dsn)
    _project(settings)

    db = _ehr(tmp_path)
    hl7_patient = db.execute("SELECT id FROM ehr_g1_patients WHERE mrn = 'RC0001'").fetchone()[0]
    db.execute("DELETE FROM ehr_g1_patients WHERE id = ?", (hl7_patient,))  # rows deleted
    db.execute("UPDATE ehr_g1_patients SET given = 'CORRUPT' WHERE mrn = 'RC0002'")  # value
    db.execute("UPDATE ehr_g1_results SET value = '999' WHERE body LIKE '%hl7v2%'")  # high risk
    db.execute("UPDATE billing_g1_charges SET amount_cents = 1 WHERE code = 'LAB2'")  # billing
    import psycopg

    with psycopg.connect(source_dsn, autocommit=True) as conn:  # behind the slot's back
        conn.execute("UPDATE labbilling.patients SET family_name = 'Changed', row_version = 2 "
                     "WHERE id = 3")

    first = run_once(settings, canonicalizer_group=canon.GROUP_ID, projections=["ehr"])
    assert not first.errors, first.errors
    classes = {(d.check.split(":")[0], d.drift_class, d.action) for d in first.drift}
    assert ("canonical", "missing", "replayed") in classes
    assert ("canonical", "field_mismatch", "replayed") in classes
    assert ("canonical", "field_mismatch", "worklisted") in classes  # the Observation
    assert ("cdc", "stale_version", "replayed") in classes
    charges = [(d.drift_class, d.action) for d in first.drift if "charges" in d.check]
    assert charges == [("field_mismatch", "replayed")], charges
    assert ("raw-hl7", "missing", "reprocessed") in classes
    assert (tmp_path / "reports" / f"{first.run_id}.json").is_file()

    _project(settings)
    worklist = Worklist.open(settings)
    try:
        for item in worklist.items():
            replay_item(settings, worklist, item.id)
        assert not worklist.items()
    finally:
        worklist.close()
    _project(settings)

    second = run_once(settings, canonicalizer_group=canon.GROUP_ID, projections=["ehr"])
    assert not second.errors, second.errors
    assert [d.to_json() for d in second.drift] == []
    assert second.converge_seconds is not None and second.converge_seconds > 0
    assert db.execute("SELECT family FROM ehr_g1_patients WHERE mrn = 'LB3'").fetchone() == (
        "Changed",)
    assert db.execute("SELECT amount_cents FROM billing_g1_charges WHERE code = 'LAB2'"
                      ).fetchone() == (2500,)  # 2 x 12.50, restored by the replayed event
