"""``fhirbus reconcile run --json`` and ``fhirbus reconcile schedule`` as real child processes
against the embedded stack: the JSON report on stdout, and a schedule that runs until
SIGTERM and then exits cleanly."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from fhirbus.consumers.canonicalizer import app as canon
from fhirbus.consumers.canonicalizer import load_site_config
from fhirbus.kafka.config import producer_config
from fhirbus.kafka.producer import Producer
from fhirbus.projections import app as papp
from fhirbus.projections import testing
from fhirbus.schemas.topics import RAW_HL7
from fhirbus.settings import Settings, load_settings

pytestmark = pytest.mark.slow
CHECKS = ["--checks", "canonical", "--projections", "ehr", "--dry-run"]


def _lost_patient(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """One admitted patient, projected, then deleted from the EHR read model by hand."""
    monkeypatch.setenv("FHIRBUS_PROJECTIONS__DSN", f"sqlite://{tmp_path / 'ehr.sqlite'}")
    monkeypatch.setenv("FHIRBUS_RECONCILE__DSN", f"sqlite://{tmp_path / 'wl.sqlite'}")
    monkeypatch.setenv("FHIRBUS_RECONCILE__REPORT_DIR", str(tmp_path / "reports"))
    settings = load_settings()
    producer = Producer(producer_config(settings))
    raw = testing._adt("CLI0001", "VCLI", 20260305000000, "CLI1").replace("\n", "\r")
    producer.send(RAW_HL7, raw.encode(), b"default").result(30)
    producer.close()
    canon.run(settings, load_site_config(None), idle_exit_s=1.5, install_signals=False)
    papp.run("ehr", settings, idle_exit_s=1.5, install_signals=False)
    db = sqlite3.connect(tmp_path / "ehr.sqlite", isolation_level=None)
    try:
        (rid,) = db.execute("SELECT id FROM ehr_g1_patients WHERE mrn = 'CLI0001'").fetchone()
        db.execute("DELETE FROM ehr_g1_patients WHERE id = ?", (rid,))
    finally:
        db.close()
    return str(rid)


def _fhirbus(*args: str) -> list[str]:
    return [sys.executable, "-m", "fhirbus.cli", "reconcile", *args]


def test_run_json_and_schedule_until_sigterm_as_child_processes(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo_root: Path
) -> None:
    rid = _lost_patient(tmp_path, monkeypatch)
    env = dict(os.environ)

    run = subprocess.run(_fhirbus("run", "--json", *CHECKS), cwd=repo_root, env=env,
                         capture_output=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    report = orjson.loads(run.stdout)
    assert not report["errors"]
    assert [(d["drift_class"], d["action"], d["resource_id"]) for d in report["drift"]] == [
        ("missing", "none", rid)]  # --dry-run: found, not repaired
    assert (tmp_path / "reports" / f"{report['run_id']}.json").is_file()

    reports = tmp_path / "reports"
    before = set(reports.iterdir())
    proc = subprocess.Popen(_fhirbus("schedule", "--every", "1s", *CHECKS), cwd=repo_root,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while len(set(reports.iterdir()) - before) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()[-2000:]
    runs = [line for line in out.decode().splitlines() if line.startswith("reconcile run ")]
    assert len(runs) >= 2 and all(": 1 drift record(s)" in line for line in runs), out
    assert len(set(reports.iterdir()) - before) == len(runs)  # each run wrote its report
