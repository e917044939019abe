"""Debezium on real Kafka Connect -> cdc.labbilling.* -> canonicalizer -> EHR read model.

The connector is the one `fhirbus connectors apply` created (conftest ``brought_up``). Its
change events must have the agreed shape, the one the in-process slot reader publishes and
the canonicalizer's CDC mappings read (consumers/canonicalizer/cdc/samples.py)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import orjson
import psycopg

from fhirbus.consumers.canonicalizer import SiteConfig
from fhirbus.consumers.canonicalizer import app as canonicalizer
from fhirbus.kafka.config import resolve_bootstrap, resolve_registry_url
from fhirbus.projections import app as projections
from fhirbus.projections import queries
from fhirbus.projections.store import open_store
from fhirbus.schemas.serde import EnvelopeSerde, registry_client
from fhirbus.schemas.topics import canonical_topic, cdc_topic
from fhirbus.settings import Settings
from tests.kafka_helpers import read_all


def _wait_for_change(bootstrap: str, topic: str, pid: int, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for msg in read_all(bootstrap, topic, 10**6, timeout_s=2):
            value = orjson.loads(msg.value()) if msg.value() else None
            if value and (value.get("after") or {}).get("id") == pid:
                assert orjson.loads(msg.key()) == {"id": pid}
                return value
        time.sleep(1)
    raise AssertionError(f"no Debezium event for patient {pid} on {topic}")


def test_debezium_change_becomes_canonical_patient_in_the_ehr(
    settings_for: Settings, source_dsn: str, tmp_path: Path
) -> None:
    pid = int(uuid.uuid4().int % 10**9)
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO labbilling.patients (id, mrn, family_name, given_name, "
                     "birth_date, sex) VALUES (%s, %s, 'Roe', 'Alex', '1980-01-02', 'F')",
                     (pid, f"LB{pid}"))
    topic = cdc_topic("labbilling", "labbilling", "patients")
    change = _wait_for_change(resolve_bootstrap(settings_for), topic, pid)
    # The agreed shape: schemaless JSON envelope, dates as epoch days, ISO timestamptz.
    assert change["op"] == "c" and change["before"] is None
    assert change["after"]["birth_date"] == 3653  # 1980-01-02
    assert change["after"]["updated_at"].endswith("Z")
    assert change["source"]["schema"] == "labbilling" and change["source"]["table"] == "patients"
    assert "schema" not in change and "payload" not in change

    canonicalizer.run(settings_for, SiteConfig(), topics=[r"^cdc\.labbilling\..*"],
                      group_id=f"canon-cdc-{pid}", idle_exit_s=10, install_signals=False)
    serde = EnvelopeSerde(registry_client(resolve_registry_url(settings_for)))
    patients = [e for m in read_all(resolve_bootstrap(settings_for), canonical_topic("Patient"),
                                    10**6, timeout_s=3)
                if (e := serde.deserialize(m.value(), canonical_topic("Patient"))).source.kind
                != "hl7v2" and f"LB{pid}".encode() in e.resource]
    assert len(patients) == 1 and patients[0].source.system == "labbilling"

    dsn = f"sqlite://{tmp_path / 'ehr.sqlite'}"
    ehr = settings_for.model_copy(update={
        "projections": settings_for.projections.model_copy(update={"dsn": dsn})})
    projections.run("ehr", ehr, group=f"ehr-cdc-{pid}", idle_exit_s=5, install_signals=False)
    store = open_store(dsn)
    try:
        chart = queries.patient_chart(store, patients[0].resource_id)
    finally:
        store.close()
    assert chart["patient"] is not None
