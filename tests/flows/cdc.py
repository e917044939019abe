"""The CDC flow: PostgreSQL rows -> change events on cdc.* -> canonicalizer -> fhir.*.v1 ->
EHR and billing read models.

The change events come from either CDC path: the in-process slot reader (``fhirbus cdc
run``, embedded tier) or Debezium on Kafka Connect (docker tier). ``run_cdc_flow`` writes
the same rows, lets the path publish them (``capture``), then runs the real canonicalizer
and projections; ``assert_cdc_outcome`` is the one definition of what must come out, so the
two paths are held to the same event shape and the same read-model result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg

from fhirbus.consumers.canonicalizer import SiteConfig
from fhirbus.consumers.canonicalizer import app as canonicalizer
from fhirbus.consumers.canonicalizer.validate import validate
from fhirbus.kafka.config import resolve_bootstrap, resolve_registry_url
from fhirbus.projections import app as projections
from fhirbus.projections import queries
from fhirbus.projections.store import open_store
from fhirbus.schemas.envelope import CanonicalEvent
from fhirbus.schemas.serde import EnvelopeSerde, registry_client
from fhirbus.schemas.topics import canonical_topic, cdc_topic
from fhirbus.settings import Settings
from tests.kafka_helpers import read_all

TABLES = ("patients", "lab_results", "charges")
# (table, ops) the writes below must produce, in order per row.
EXPECTED_OPS = {"patients": ["c"], "lab_results": ["c", "u"], "charges": ["c", "u"]}


@dataclass(frozen=True)
class CdcSource:
    name: str  # as declared in sources.yaml: cdc.<name>.<schema>.<table>
    schema: str
    dsn: str  # how this process writes to the source database


def cdc_writes(schema: str, row_id: int) -> list[str]:
    """A patient, a lab result then its correction, a charge then a changed quantity."""
    s, i = schema, row_id
    return [
        f"INSERT INTO {s}.patients (id, mrn, family_name, given_name, birth_date, sex) "
        f"VALUES ({i}, 'CDC{i}', 'Roe', 'Alex', '1980-01-02', 'F')",
        f"INSERT INTO {s}.lab_results (id, patient_id, loinc_code, test_name, value_numeric, "
        f"unit, status, collected_at) VALUES ({i}, {i}, '2345-7', 'Glucose', 5.4, 'mmol/L', "
        "'F', '2026-03-01 08:00+00')",
        f"UPDATE {s}.lab_results SET status = 'C', value_numeric = 5.6, row_version = 2 "
        f"WHERE id = {i}",
        f"INSERT INTO {s}.charges (id, patient_id, encounter_number, charge_code, quantity, "
        f"unit_price, status, service_date) VALUES ({i}, {i}, 'V{i}', 'LAB01', 2, 12.50, "
        "'billable', '2026-03-01')",
        f"UPDATE {s}.charges SET quantity = 3, row_version = 2 WHERE id = {i}",
    ]


@dataclass
class CdcOutcome:
    source: CdcSource
    row_id: int
    changes: dict[str, list[tuple[Any, Any]]]  # table -> (key, value) for our rows, in order
    events: dict[str, list[CanonicalEvent]] = field(default_factory=dict)
    chart: dict[str, Any] = field(default_factory=dict)
    ledger: list[dict[str, Any]] = field(default_factory=list)
    balance: int | None = None


def _changes(bootstrap: str, source: CdcSource, row_id: int, timeout_s: float
             ) -> dict[str, list[tuple[Any, Any]]]:
    """Our rows' change events, waiting until each table has the ops the writes imply."""
    deadline = time.monotonic() + timeout_s
    while True:
        found: dict[str, list[tuple[Any, Any]]] = {}
        for table in TABLES:
            topic = cdc_topic(source.name, source.schema, table)
            found[table] = [
                (orjson.loads(m.key()), orjson.loads(m.value()))
                for m in read_all(bootstrap, topic, 10**6, timeout_s=0.5)
                if m.value() and orjson.loads(m.key()) == {"id": row_id}]
        if all(len(found[t]) >= len(ops) for t, ops in EXPECTED_OPS.items()):
            return found
        if time.monotonic() > deadline:
            return found  # the assertions say what is missing
        time.sleep(0.5)


def run_cdc_flow(settings: Settings, source: CdcSource, row_id: int, tmp: Path,
                 capture: Callable[[], None], timeout_s: float = 60,
                 idle_s: float = 5) -> CdcOutcome:
    """``idle_s``: how long the consumers wait for more before they finish (the embedded
    broker delivers at once; a real cluster may pause between fetches)."""
    with psycopg.connect(source.dsn, autocommit=True) as conn:
        for statement in cdc_writes(source.schema, row_id):
            conn.execute(statement)  # type: ignore[arg-type]
    capture()
    bootstrap = resolve_bootstrap(settings)
    out = CdcOutcome(source, row_id, _changes(bootstrap, source, row_id, timeout_s))
    topics = [cdc_topic(source.name, source.schema, t) for t in TABLES]
    canonicalizer.run(settings, SiteConfig(), topics=topics, group_id=f"canon-cdc-{row_id}",
                      idle_exit_s=idle_s, install_signals=False)
    serde = EnvelopeSerde(registry_client(resolve_registry_url(settings)))
    decoded = {rtype: [serde.deserialize(m.value(), canonical_topic(rtype))
                       for m in read_all(bootstrap, canonical_topic(rtype), 10**6, timeout_s=1)]
               for rtype in ("Patient", "Observation", "ChargeItem")}
    patients = [e for e in decoded["Patient"] if f"CDC{row_id}".encode() in e.resource]
    subject = patients[0].resource_id if patients else None
    out.events = {"Patient": patients, **{
        rtype: sorted((e for e in decoded[rtype] if e.key == subject),
                      key=lambda e: e.resource_version)
        for rtype in ("Observation", "ChargeItem")}}
    for name in ("ehr", "billing"):
        dsn = f"sqlite://{tmp / f'{name}-cdc-{row_id}.sqlite'}"
        project = settings.model_copy(update={
            "projections": settings.projections.model_copy(update={"dsn": dsn})})
        projections.run(name, project, group=f"{name}-cdc-{row_id}", idle_exit_s=idle_s,
                        install_signals=False)
        store = open_store(dsn)
        try:
            if name == "ehr":
                out.chart = queries.patient_chart(store, subject or "")
            else:
                keys = [f"ChargeItem/{e.resource_id}" for e in out.events["ChargeItem"][:1]]
                out.ledger = queries.ledger(store, keys)
        finally:
            store.close()
    out.balance = sum(row["amount_cents"] for row in out.ledger)
    return out


def assert_change_shape(out: CdcOutcome) -> None:
    """The agreed change-event shape (both CDC paths): schemaless Debezium JSON envelope,
    key = the primary key, dates as epoch days, timestamptz as ISO UTC."""
    for table, ops in EXPECTED_OPS.items():
        seen = out.changes[table]
        assert [v["op"] for _, v in seen] == ops, f"{table}: ops {[v['op'] for _, v in seen]}"
        for key, value in seen:
            assert key == {"id": out.row_id}
            assert "schema" not in value and "payload" not in value
            assert value["source"]["schema"] == out.source.schema
            assert value["source"]["table"] == table
            assert value["after"]["id"] == out.row_id and isinstance(value["ts_ms"], int)
            assert value["source"]["lsn"] and value["source"]["txId"]
    created = out.changes["patients"][0][1]
    assert created["before"] is None
    assert created["after"]["birth_date"] == 3653  # 1980-01-02
    assert created["after"]["updated_at"].endswith("Z")
    corrected = out.changes["lab_results"][1][1]["after"]
    assert (corrected["status"], corrected["row_version"]) == ("C", 2)


def assert_cdc_outcome(out: CdcOutcome) -> None:
    assert_change_shape(out)
    patients, results, charges = (out.events[t] for t in ("Patient", "Observation",
                                                         "ChargeItem"))
    # One canonical event per source row version, each valid FHIR, with CDC provenance.
    assert (len(patients), len(results), len(charges)) == (1, 2, 2)
    for event in patients + results + charges:
        validate(orjson.loads(event.resource))
        src = event.source
        assert (src.kind, src.system) == ("cdc", out.source.name)
        assert src.lsn and src.tx_id, f"{event.resource_type}: no LSN / transaction id"
    assert [e.event_type for e in results] == ["observation.final", "observation.corrected"]
    assert [e.resource_version for e in results] == [1, 2]
    assert orjson.loads(results[1].resource)["valueQuantity"]["value"] == 5.6
    assert [e.event_type for e in charges] == ["chargeitem.billable"] * 2
    assert orjson.loads(charges[1].resource)["priceOverride"]["value"] == 37.5
    # EHR: the patient's chart holds the corrected result at its latest version.
    chart = out.chart
    assert chart["patient"] is not None and chart["patient_id"] == patients[0].resource_id
    result = {r["id"]: r for r in chart["results"]}[results[1].resource_id]
    assert (result["status"], result["version"]) == ("corrected", 2)
    # Billing: the first amount charged, reversed when the quantity changed, then the new one.
    assert [(r["version"], r["kind"], r["amount_cents"]) for r in out.ledger] == [
        (1, "charge", 2500), (1, "reversal", -2500), (2, "charge", 3750)]
    assert out.balance == 3750
