"""The reconciliation flow: a read-model row lost behind the pipeline's back is found by
``fhirbus reconcile run``, repaired by replaying its canonical event, and the next run
reports no drift.

``run_reconcile_flow`` drives the real canonicalizer, EHR projection and the ``fhirbus
reconcile run --json`` command line (in process) against whatever cluster ``settings``
points at; ``assert_reconcile_outcome`` is the one definition of the outcome for both tiers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from fhirbus.consumers.canonicalizer import SiteConfig
from fhirbus.consumers.canonicalizer import app as canonicalizer
from fhirbus.kafka.config import producer_config
from fhirbus.kafka.producer import Producer
from fhirbus.projections import app as projections
from fhirbus.projections import queries
from fhirbus.projections.migrations import prefix
from fhirbus.projections.store import open_store
from fhirbus.schemas.topics import RAW_HL7
from fhirbus.settings import Settings, load_settings
from tests.flows.dlq import fhirbus
from tests.flows.mllp import oru


@dataclass
class ReconcileOutcome:
    patient_id: str
    lost: bool  # the row was really gone before the first run
    first: tuple[int, dict[str, Any]]  # exit code, JSON report
    second: tuple[int, dict[str, Any]]
    chart: dict[str, Any]


def _reconcile() -> tuple[int, dict[str, Any]]:
    code, out, err = fhirbus("reconcile", "run", "--checks", "canonical",
                             "--projections", "ehr", "--json")
    assert out.strip(), f"reconcile run printed no report: {err}"
    return code, orjson.loads(out)


def _patient_ids(dsn_path: Path, mrn: str) -> list[str]:
    db = sqlite3.connect(dsn_path, isolation_level=None)
    try:
        table = f"{prefix('ehr', 1)}patients"
        return [r[0] for r in db.execute(f"SELECT id FROM {table} WHERE mrn = ?", (mrn,))]
    finally:
        db.close()


def run_reconcile_flow(settings: Settings, tag: str, tmp: Path,
                       setenv: Callable[[str, str], None], idle_s: float = 5
                       ) -> ReconcileOutcome:
    """``setenv``: the CLI reads its settings from the environment (a monkeypatch)."""
    ehr_path = tmp / f"ehr-rec-{tag}.sqlite"
    for key, value in {"FHIRBUS_PROJECTIONS__DSN": f"sqlite://{ehr_path}",
                       "FHIRBUS_RECONCILE__DSN": f"sqlite://{tmp / f'wl-{tag}.sqlite'}",
                       "FHIRBUS_RECONCILE__REPORT_DIR": str(tmp / f"reports-{tag}")}.items():
        setenv(key, value)
    settings = load_settings()
    mrn = f"REC{tag}"
    producer = Producer(producer_config(settings))
    producer.send(RAW_HL7, oru(f"RC{tag}", mrn, "F", "4.2"), b"default").result(30)
    producer.close()
    canonicalizer.run(settings, SiteConfig(), group_id=f"canon-rec-{tag}", idle_exit_s=idle_s,
                      install_signals=False)

    def project() -> None:
        projections.run("ehr", settings, group=f"ehr-rec-{tag}", idle_exit_s=idle_s,
                        install_signals=False)

    project()
    (patient_id,) = _patient_ids(ehr_path, mrn)
    db = sqlite3.connect(ehr_path, isolation_level=None)
    db.execute(f"DELETE FROM {prefix('ehr', 1)}patients WHERE id = ?", (patient_id,))
    db.close()
    lost = _patient_ids(ehr_path, mrn) == []
    first = _reconcile()
    project()  # the projection applies the replayed event
    second = _reconcile()
    store = open_store(f"sqlite://{ehr_path}")
    try:
        chart = queries.patient_chart(store, patient_id)
    finally:
        store.close()
    return ReconcileOutcome(patient_id, lost, first, second, chart)


def assert_reconcile_outcome(out: ReconcileOutcome) -> None:
    assert out.lost, "the injected drift (a deleted read-model row) did not take"
    code, first = out.first
    assert code == 0 and not first["errors"], first["errors"]
    ours = [d for d in first["drift"] if d["resource_id"] == out.patient_id]
    assert [(d["check"].split(":")[0], d["drift_class"], d["action"]) for d in ours] == [
        ("canonical", "missing", "replayed")], first["drift"]
    code, second = out.second
    assert code == 0 and not second["errors"], second["errors"]
    assert second["total_drift"] == 0 and second["drift"] == [], second["drift"]
    # Repaired through the event, not by hand: the chart is whole again, result included.
    assert out.chart["patient"] is not None and out.chart["patient_id"] == out.patient_id
    # The ORU's Observation and DiagnosticReport, untouched by the repair.
    assert [r["status"] for r in out.chart["results"]] == ["final", "final"]
