"""Runtime promises beyond the happy path: outages pause instead of dead-lettering, a
rebalance loses nothing, SIGTERM drains and commits, and logs carry no message content."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from fhirbus.consumers.errors import DownstreamUnavailable
from fhirbus.consumers.records import Publish, Record
from fhirbus.consumers.runtime import ConsumerRuntime, ConsumerSpec
from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.kafka.config import producer_config
from fhirbus.kafka.producer import Producer
from fhirbus.settings import Settings, load_settings
from tests.kafka_helpers import read_all


@pytest.fixture
def quick(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("FHIRBUS_RUNTIME__BACKOFF_INITIAL_MS", "20")
    monkeypatch.setenv("FHIRBUS_RUNTIME__BACKOFF_MAX_MS", "200")
    monkeypatch.setenv("FHIRBUS_RUNTIME__OUTAGE_PROBE_MAX_MS", "200")
    monkeypatch.setenv("FHIRBUS_RUNTIME__MAX_ATTEMPTS", "2")
    return load_settings()


def _fill(settings: Settings, topic: str, n: int) -> None:
    producer = Producer(producer_config(settings))
    for i in range(n):
        producer.send(topic, orjson.dumps({"id": i}), key=str(i % 11))
    assert producer.flush(60) == 0
    producer.close()


def test_outage_pauses_and_dead_letters_nothing(
    embedded_stack: EmbeddedStack, quick: Settings, unique: str
) -> None:
    src, out, dlq = f"out-in-{unique}", f"out-out-{unique}", f"out-dlq-{unique}"
    embedded_stack.create_topic(src, 2)
    _fill(quick, src, 200)
    outage_until = time.monotonic() + 2.0  # far longer than max_attempts x backoff

    def handler(record: Record) -> list[Publish]:
        if time.monotonic() < outage_until:
            raise DownstreamUnavailable("read-model database unreachable")
        return [Publish(out, record.raw, record.key)]

    spec = ConsumerSpec(stage="test", group_id=f"g-{unique}", topics=[src], handler=handler,
                        dead_letter_topic=dlq)
    runtime = ConsumerRuntime(spec, quick)
    runtime.run(max_records=200, idle_exit_s=15)
    assert runtime.metrics.counts["dead_lettered"] == 0
    assert runtime.metrics.counts["retried"] > 2
    got = read_all(embedded_stack.bootstrap, out, 200)
    assert sorted(orjson.loads(m.value())["id"] for m in got) == list(range(200))
    assert read_all(embedded_stack.bootstrap, dlq, 0, timeout_s=1) == []


def test_a_member_joining_mid_stream_loses_nothing(
    embedded_stack: EmbeddedStack, quick: Settings, unique: str
) -> None:
    src, out = f"rb-in-{unique}", f"rb-out-{unique}"
    embedded_stack.create_topic(src, 4)
    total = 3_000
    _fill(quick, src, total)
    members: list[ConsumerRuntime] = []

    def handler(record: Record) -> list[Publish]:
        # Stay slow until the second member owns partitions, so the rebalance happens
        # mid-stream whatever the broker's rebalance timing.
        if not members[1]._assigned:
            time.sleep(0.01)
        return [Publish(out, record.raw, record.key)]

    for _ in range(2):
        spec = ConsumerSpec(stage="test", group_id=f"g-{unique}", topics=[src],
                            handler=handler, dead_letter_topic=f"rb-dlq-{unique}")
        members.append(ConsumerRuntime(spec, quick))
    threads = [threading.Thread(target=m.run, kwargs={"idle_exit_s": 6}) for m in members]
    threads[0].start()
    time.sleep(1.0)
    threads[1].start()
    for t in threads:
        t.join(120)
    assert all(m.metrics.counts["consumed"] > 0 for m in members), "no rebalance happened"
    ids = {orjson.loads(m.value())["id"] for m in read_all(embedded_stack.bootstrap, out, total)}
    assert ids == set(range(total))


def test_sigterm_drains_and_commits(
    embedded_stack: EmbeddedStack, settings: Settings, unique: str, tmp_path: Path,
    repo_root: Path,
) -> None:
    topic, db = f"term-{unique}", tmp_path / "ledger.db"
    embedded_stack.create_topic(topic, 2)
    producer = Producer(producer_config(settings))
    for i in range(3_000):
        producer.send(topic, orjson.dumps({"id": i, "account": "a", "amount": 1}), key="a")
    assert producer.flush(60) == 0
    cmd = [sys.executable, "-m", "tests.integration.apps.ledger_consumer", "--db", str(db),
           "--topic", topic, "--group", f"g-{unique}", "--slow", "0.05"]
    env = {**os.environ, "FHIRBUS_RUNTIME__BATCH_SIZE": "100"}
    proc = subprocess.Popen(cmd, cwd=repo_root, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _count(db, "applied") < 300:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, "SIGTERM must end the consumer cleanly"
    applied, position = _count(db, "applied"), _positions(db)
    assert 0 < applied < 3_000
    assert position == applied, "stored positions cover exactly what was applied"
    rerun = subprocess.run([*cmd, "--idle-exit", "4"], cwd=repo_root, env=env, timeout=120,
                           stderr=subprocess.DEVNULL, check=False)
    assert rerun.returncode == 0
    assert _count(db, "applied") == 3_000
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT amount FROM balance").fetchone()[0] == 3_000


def _count(db: Path, table: str) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _positions(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT coalesce(sum(next_offset), 0) FROM positions").fetchone()[0]


def test_dead_letter_logs_carry_no_content(
    embedded_stack: EmbeddedStack, quick: Settings, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    src = f"phi-in-{unique}"
    embedded_stack.create_topic(src, 1)
    producer = Producer(producer_config(quick))
    producer.send(src, b"PID|1||MRN12345||DOE^JANE", key="k")
    assert producer.flush(30) == 0

    def handler(record: Record) -> None:
        raise ValueError(f"cannot map {record.raw!r}")  # a careless message quoting content

    spec = ConsumerSpec(stage="test", group_id=f"g-{unique}", topics=[src], handler=handler,
                        dead_letter_topic=f"phi-dlq-{unique}")
    with caplog.at_level(logging.DEBUG):
        ConsumerRuntime(spec, quick).run(max_records=1, idle_exit_s=10)
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "dead-lettered" in text
    assert "DOE" not in text and "MRN12345" not in text
