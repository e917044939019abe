"""SIGKILL a consumer mid-batch, restart it: no event lost, none applied twice."""

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

from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.kafka.config import producer_config
from fhirbus.kafka.producer import Producer
from fhirbus.settings import Settings

N = 5_000


def _spawn(
    db: Path, topic: str, group: str, repo: Path, idle_exit: float | None
) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tests.integration.apps.ledger_consumer", "--db", str(db),
           "--topic", topic, "--group", group, "--slow", "0.02"]
    if idle_exit is not None:
        cmd += ["--idle-exit", str(idle_exit)]
    env = {**os.environ, "FHIRBUS_RUNTIME__BATCH_SIZE": "200"}
    return subprocess.Popen(cmd, cwd=repo, env=env, stderr=subprocess.DEVNULL)


def _applied(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        try:
            return conn.execute("SELECT count(*) FROM applied").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


@pytest.mark.slow
def test_sigkill_mid_batch_then_restart_is_exact(
    embedded_stack: EmbeddedStack, settings: Settings, unique: str, tmp_path: Path,
    repo_root: Path,
) -> None:
    topic, group, db = f"ledger-{unique}", f"ledger-{unique}", tmp_path / "ledger.db"
    embedded_stack.create_topic(topic, 4)
    producer = Producer(producer_config(settings))
    for i in range(N):
        event = {"id": i, "account": f"acct-{i % 10}", "amount": i % 7 + 1}
        producer.send(topic, orjson.dumps(event), key=event["account"])
    assert producer.flush(60) == 0

    first = _spawn(db, topic, group, repo_root, idle_exit=None)
    deadline = time.monotonic() + 60
    while _applied(db) < N // 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    killed_at = _applied(db)
    assert 0 < killed_at < N, "the kill must land while work remains"

    second = _spawn(db, topic, group, repo_root, idle_exit=5)
    assert second.wait(120) == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM applied").fetchone()[0] == N
        balances = dict(conn.execute("SELECT account, amount FROM balance").fetchall())
    expected: dict[str, int] = {}
    for i in range(N):
        expected[f"acct-{i % 10}"] = expected.get(f"acct-{i % 10}", 0) + i % 7 + 1
    assert balances == expected
