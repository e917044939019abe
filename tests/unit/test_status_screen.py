"""``fhirbus status`` without a running platform: each part says what it can and why not the
rest; a stale state file (its supervisor gone) shows every process down; the spool depth
comes from the listener's real spool file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fhirbus.producers.mllp.intake import Record
from fhirbus.producers.mllp.spool import Spool
from fhirbus.settings import Settings, load_settings
from fhirbus.supervisor import state
from fhirbus.supervisor.screen import render
from fhirbus.supervisor.status import collect, summarize_report


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in list(os.environ):
        if key.startswith("FHIRBUS_"):
            monkeypatch.delenv(key)
    return load_settings(state_dir=tmp_path)


def test_never_started(fresh: Settings) -> None:
    data = collect(fresh)
    assert data["supervisor"]["state"] == "never started"
    assert data["processes"] == [] and data["lag"] == {}
    assert "fhirbus up" in data["kafka_error"]
    assert data["spool"]["depth"] == 0
    assert "no reconciliation report" in data["reconciliation"]["note"]
    text = render(data)
    assert "start it with `fhirbus up`" in text and "unavailable:" in text


def test_a_stale_state_file_shows_every_process_down(fresh: Settings) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state.write(fresh.state_dir, {
        "pid": dead.pid, "state": "running", "mllp": "127.0.0.1:1",
        "processes": {"canonicalizer": {"status": "up", "pid": dead.pid, "restarts": 2,
                                        "last_exit_code": -9, "kind": "canonicalizer"}}})
    data = collect(fresh)
    assert data["supervisor"]["state"] == "not running"
    assert data["processes"][0]["status"] == "down"
    assert data["processes"][0]["restarts"] == 2
    assert state.running(fresh.state_dir) is None
    assert "canonicalizer" in render(data)


def test_a_dead_child_of_a_live_supervisor_shows_down(fresh: Settings) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state.write(fresh.state_dir, {
        "pid": os.getpid(), "state": "running",
        "processes": {"projection-ehr": {"status": "up", "pid": dead.pid, "restarts": 0}}})
    data = collect(fresh)
    assert data["supervisor"]["state"] == "running"
    assert data["processes"][0]["status"] == "down"


def test_spool_depth_is_read_from_the_listener_spool(fresh: Settings) -> None:
    from fhirbus.producers.mllp.app import spool_path

    spool = Spool(spool_path(fresh))
    spool.start()
    try:
        for n in range(3):
            spool.append("raw", Record("hl7.raw.v1", b"k", b"v%d" % n, []), None).result(5)
    finally:
        spool.close()
    assert collect(fresh)["spool"]["depth"] == 3


def test_last_reconciliation_report(fresh: Settings) -> None:
    folder = fresh.state_dir / "reconcile" / "reports"
    folder.mkdir(parents=True)
    (folder / "r1.json").write_text('{"run_id": "r1", "total_drift": 2, "checks": '
                                    '[{"compared": 5}, {"compared": 7}], "errors": []}')
    rec = collect(fresh)["reconciliation"]
    assert rec["run_id"] == "r1" and rec["total_drift"] == 2 and rec["compared"] == 12
    assert "total_drift=2" in render(collect(fresh))
    assert summarize_report({"errors": ["x"]}) == {"errors": 1}


def test_render_shows_lag_and_dead_letters() -> None:
    text = render({
        "state_dir": "/s", "supervisor": {"state": "running", "pid": 1, "mllp": "h:1"},
        "processes": [{"name": "broker", "status": "restarting", "pid": None, "restarts": 3,
                       "last_exit_code": -9}],
        "lag": {"g1": {"lag": 12, "partitions": 4, "source": "committed offsets"},
                "g2": {"error": "boom"}},
        "spool": {"depth": 5}, "dead_letters": {"dlq.x.v1": 7}, "kafka_error": None,
        "reconciliation": {"note": "none"}})
    assert "restarting" in text and "-9" in text
    assert "12  over 4 partition(s)" in text and "unavailable: boom" in text
    assert "listener spool depth: 5" in text and "dlq.x.v1" in text
