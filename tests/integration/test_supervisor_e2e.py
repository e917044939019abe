"""End to end, as a user runs it: ``fhirbus up``, ``fhirbus demo``, ``fhirbus status --json``
as subprocesses. The demo's counts are checked against the corpus it sends; a supervised
process killed with SIGKILL shows down, comes back with restarts=1, and messages sent while
it was down all reach the read models. SIGTERM stops every child.

CDC runs against the local PostgreSQL in a database and slot of this test's own, dropped at
the end (a slot left behind would keep WAL forever)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhirbus.commands.demo import NOT_HL7, UNMAPPABLE, demo_messages
from fhirbus.settings import load_settings
from fhirbus.supervisor import cdc as sup_cdc
from fhirbus.supervisor.state import pid_alive

from ..conformance.test_corpus_outcomes import EXPECTED_DEAD
from ..corpus import HL7_CORPUS
from ..unit.test_mllp_intake import INVALID_OUTCOMES

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
EXTRA = 5  # messages sent while the canonicalizer is down


def fhirbus(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fhirbus.cli", *args], env=env,
                          capture_output=True, timeout=timeout, check=False)


def status(env: dict[str, str]) -> dict[str, Any]:
    run = fhirbus(env, "status", "--json", timeout=60)
    return orjson.loads(run.stdout)


def procs(st: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in st["processes"]}


def expected_outcomes() -> tuple[int, int, int, int]:
    """(accepted, rejected, distinct accepted payloads, canonicalizer dead letters)."""
    accepted: list[tuple[str, bytes]] = []
    rejected = 0
    for label, raw in demo_messages(HL7_CORPUS):
        folder, name = label.split("/", 1)
        if (label, raw) == NOT_HL7:
            code = "AR"
        elif folder == "invalid":
            code = INVALID_OUTCOMES[name][0]
        else:
            code = "AA"
        if code == "AA":
            accepted.append((label, raw))
        else:
            rejected += 1
    dead = sum(1 for label, _ in accepted if label in EXPECTED_DEAD)
    dead += 1  # UNMAPPABLE
    assert UNMAPPABLE in accepted
    return len(accepted), rejected, len({raw for _, raw in accepted}), dead


def adt(n: int, tag: str) -> bytes:
    return (f"MSH|^~\\&|E2E|E2E|FHIRBUS|FHIRBUS|20250101120000||ADT^A01^ADT_A01|{tag}-{n}|P|"
            f"2.5.1\rEVN|A01|20250101120000\rPID|1||{tag}{n}^^^E2E^MR||Doe^Jane||19800101|F\r"
            f"PV1|1|I|W^1^1||||||||||||||||V{tag}{n}\r").encode()


def ehr_mrns(state_dir: Path, prefix: str) -> int:
    from fhirbus.projections.app import open_for
    from fhirbus.projections.queries import reading

    settings = load_settings(state_dir=state_dir)
    store = open_for("ehr", settings)
    try:
        with reading(store, "ehr") as (tx, p):
            return int(tx.execute(f"SELECT count(*) FROM {p}patients WHERE mrn LIKE ?",
                                  (f"{prefix}%",))[0][0])
    finally:
        store.close()


@pytest.fixture
def cdc_source(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A sources file for the example schema in a database and slot of this test's own."""
    suffix = uuid.uuid4().hex[:10]
    dsn = f"postgresql://postgres@127.0.0.1:5432/fhirbus_e2e_{suffix}"
    slot = f"fhirbus_e2e_{suffix}"
    problem = sup_cdc.probe(dsn, create=True)
    if problem:
        pytest.skip(f"needs the local PostgreSQL with logical decoding: {problem}")
    path = tmp_path / "sources.yaml"
    path.write_text(f"sources:\n  - name: labbilling\n    dsn: {dsn}\n    slot: {slot}\n"
                    "    tables:\n      - {schema: labbilling, table: patients}\n"
                    "      - {schema: labbilling, table: lab_results}\n"
                    "      - {schema: labbilling, table: charges}\n")
    yield {"FHIRBUS_CDC__SOURCES_FILE": str(path)}
    sup_cdc.drop_example(dsn, [slot])


@pytest.fixture
def up(tmp_path: Path, cdc_source: dict[str, str]) -> Iterator[tuple[subprocess.Popen, dict]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIRBUS_")}
    env.update(cdc_source, FHIRBUS_STATE_DIR=str(tmp_path / "state"), FHIRBUS_LOG_FORMAT="text",
               FHIRBUS_HL7__PORT="0", FHIRBUS_SUPERVISOR__RECONCILE_EVERY_S="3600",
               FHIRBUS_SUPERVISOR__RESTART_BACKOFF_INITIAL_S="4")
    out = (tmp_path / "up.out").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "fhirbus.cli", "up"], env=env, stdout=out,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while b"fhirbus up: ready" not in (tmp_path / "up.out").read_bytes():
            assert proc.poll() is None, (tmp_path / "up.out").read_text()
            assert time.monotonic() < deadline, (tmp_path / "up.out").read_text()
            time.sleep(0.2)
        yield proc, env
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        out.close()


def test_up_demo_status_kill_and_restart(up: tuple[subprocess.Popen, dict],
                                         tmp_path: Path) -> None:
    proc, env = up
    accepted, rejected, distinct, dead = expected_outcomes()

    run = fhirbus(env, "demo", "--json", timeout=150)
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    demo = orjson.loads(run.stdout)
    assert demo["settled"]["ok"]
    assert demo["messages"]["accepted"] == accepted
    assert demo["messages"]["rejected"] == rejected
    topics = demo["topics"]
    assert topics["hl7.raw.v1"] == distinct  # a retransmission is stored once
    assert topics["hl7.rejected.v1"] == rejected
    assert topics["dlq.canonicalizer.v1"] == dead
    assert sum(demo["dead_letters"]["dlq.canonicalizer.v1"].values()) == dead
    assert any("ZZZ^Z99" in reason for reason in demo["dead_letters"]["dlq.canonicalizer.v1"])
    assert sum(demo["dead_letters"]["hl7.rejected.v1"].values()) == rejected
    for topic in ("fhir.patient.v1", "fhir.observation.v1", "fhir.encounter.v1"):
        assert topics[topic] > 0
    # CDC: the scripted changes reached Kafka and the read models.
    assert demo["cdc"]["applied"] == 14
    assert sum(n for t, n in topics.items() if t.startswith("cdc.labbilling.")) >= 14
    models = demo["read_models"]
    assert models["ehr"]["patients"] > 0 and models["ehr"]["results"] > 0
    assert models["billing"]["charges"] >= 3 and models["analytics"]["result_facts"] > 0
    assert demo["chart"]["patient"] is not None and demo["chart"]["results"]
    assert demo["reconciliation"]["report"]["checks"]

    st = status(env)
    assert st["supervisor"]["state"] == "running"
    assert {p["status"] for p in st["processes"]} == {"up"}
    assert {"broker", "hl7-listener", "canonicalizer", "cdc-labbilling",
            "projection-ehr", "projection-billing", "projection-analytics",
            "reconciler"} <= set(procs(st))
    assert all(g.get("lag") == 0 for g in st["lag"].values()), st["lag"]
    assert st["dead_letters"]["dlq.canonicalizer.v1"] == dead
    assert st["spool"]["depth"] == 0

    # SIGKILL the canonicalizer; what arrives meanwhile waits on hl7.raw.v1.
    victim = procs(st)["canonicalizer"]["pid"]
    os.kill(victim, signal.SIGKILL)
    host, port = st["supervisor"]["mllp"].rsplit(":", 1)
    from fhirbus.producers.mllp.client import MllpClient, ack_code

    with MllpClient(host, int(port)) as client:
        codes = [ack_code(client.send(adt(n, "E2E"))) for n in range(EXTRA)]
    assert codes == ["AA"] * EXTRA
    assert procs(status(env))["canonicalizer"]["status"] in ("down", "restarting")
    deadline = time.monotonic() + 30
    while True:
        canon = procs(status(env))["canonicalizer"]
        if canon["status"] == "up" and canon["pid"] != victim:
            break
        assert time.monotonic() < deadline, canon
        time.sleep(0.5)
    assert canon["restarts"] == 1 and canon["last_exit_code"] == -signal.SIGKILL
    deadline = time.monotonic() + 45
    while ehr_mrns(Path(env["FHIRBUS_STATE_DIR"]), "E2E") < EXTRA:
        assert time.monotonic() < deadline, "messages sent while the canonicalizer was down"
        time.sleep(0.5)
    assert ehr_mrns(Path(env["FHIRBUS_STATE_DIR"]), "E2E") == EXTRA

    children = [p["pid"] for p in procs(status(env)).values()]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(90) == 0, (tmp_path / "up.out").read_text()[-3000:]
    assert not [pid for pid in children if pid_alive(pid)]
    final = status(env)
    assert final["supervisor"]["state"] == "not running"
    assert b"every process exited cleanly" in (tmp_path / "up.out").read_bytes()
