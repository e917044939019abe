"""PostgreSQL drops a running projection's connections (a restart, a failover, an admin's
``pg_terminate_backend``): ``fhirbus project ehr|billing`` reconnects and retries the batch,
on the embedded broker against the local PostgreSQL. It must neither exit nor dead-letter,
and its final read model equals an uninterrupted run's, positions at the high watermarks.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhirbus.kafka.config import producer_config, resolve_registry_url
from fhirbus.kafka.producer import Producer
from fhirbus.projections import app, positions, testing
from fhirbus.projections.migrations import prefix
from fhirbus.projections.rebuild import watermarks
from fhirbus.projections.store import open_store
from fhirbus.schemas.envelope import CanonicalEvent
from fhirbus.schemas.serde import EnvelopeSerde, registry_client
from fhirbus.schemas.topics import canonical_topic
from fhirbus.settings import Settings, load_settings

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
KILLS = 4
# (apply delay per record, batch size): each run lasts several seconds, many batches long.
PACE = {"ehr": (0.002, 200), "billing": (0.02, 20)}


_published: set[int] = set()


def _publish(settings: Settings, events: list[CanonicalEvent]) -> None:
    serde = EnvelopeSerde(registry_client(resolve_registry_url(settings)))
    producer = Producer(producer_config(settings))
    for event in events:
        topic = canonical_topic(event.resource_type)
        producer.send(topic, serde.serialize(event, topic), event.key)
    assert producer.flush(60) == 0
    producer.close(30)


@pytest.fixture(scope="module")
def history() -> list[CanonicalEvent]:
    return testing.synthetic_history(250)


@pytest.fixture
def published(settings: Settings, history: list[CanonicalEvent]) -> list[CanonicalEvent]:
    """Published once per module (the stack is module-scoped); every test reads it all."""
    if id(history) not in _published:
        _publish(settings, history)
        _published.add(id(history))
    return history


@pytest.fixture
def schemas() -> Iterator[tuple[str, str]]:
    """Two fresh schemas in the shared test database: the disrupted run's and the reference's."""
    if why := testing.pg_available():
        pytest.skip(why)
    with testing.pg_schema_dsn() as a, testing.pg_schema_dsn() as b:
        yield a, b


def _with_app_name(dsn: str, name: str) -> str:
    # Every test shares database "test": the application name is what scopes the kills.
    return f"{dsn}{'&' if '?' in dsn else '?'}application_name={name}"


def _terminate(app_name: str, busy: bool) -> int:
    """Kill the server side of the projection's connections; how many. ``busy``: only
    while one is inside a transaction (mid-batch), polling for that moment."""
    import psycopg

    sql = ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
           "WHERE datname = current_database() AND application_name = %s "
           "AND pid <> pg_backend_pid()" + (" AND xact_start IS NOT NULL" if busy else ""))
    deadline = time.monotonic() + 20
    with psycopg.connect(testing.PG_BASE_DSN, autocommit=True) as conn:
        while True:
            killed = sum(1 for (ok,) in conn.execute(sql, (app_name,)).fetchall() if ok)
            if killed or time.monotonic() > deadline:
                return killed
            time.sleep(0.002)


def _stats(dsn: str, name: str) -> dict[str, int]:
    store = open_store(dsn)
    try:
        with store.transaction(lock=False) as tx:
            return positions.load_stats(tx, prefix(name, 1))
    except Exception:
        return {}  # not migrated yet
    finally:
        store.close()


def _stored_positions(dsn: str, name: str) -> dict[tuple[str, int], int]:
    store = open_store(dsn)
    try:
        with store.transaction(lock=False) as tx:
            return positions.load(tx, prefix(name, 1))
    finally:
        store.close()


def _dump(dsn: str, name: str) -> dict[str, list]:
    store = open_store(dsn)
    try:
        return testing.dump(store, app.build_projection(name, load_settings(
            projections={"dsn": dsn})))
    finally:
        store.close()


def _spawn(name: str, dsn: str, group: str, repo: Path, log: Path) -> subprocess.Popen:
    delay, batch = PACE[name]
    cmd = [sys.executable, "-m", "fhirbus.cli", "project", name, "--group", group,
           "--apply-delay", str(delay), "--idle-exit", "5"]
    env = {**os.environ, "FHIRBUS_RUNTIME__BATCH_SIZE": str(batch),
           "FHIRBUS_PROJECTIONS__DSN": dsn, "FHIRBUS_LOG_LEVEL": "INFO"}
    with log.open("wb") as err:
        return subprocess.Popen(cmd, cwd=repo, env=env, stderr=err)


def _dead_letters(settings: Settings, name: str) -> int:
    marks = watermarks(settings, [f"dlq.{app.stage(name)}.v1"])
    return sum(high - low for low, high in marks.values())


def _kill_while_applying(proc: subprocess.Popen, dsn: str, app_name: str, name: str,
                         total: int) -> int:
    """Terminate the projection's connections KILLS times, spread over its run (every other
    one inside a transaction), and after each wait until it has committed another batch.
    Returns how many backends were killed."""
    killed = 0
    for k in range(1, KILLS + 1):
        deadline = time.monotonic() + 90
        while _stats(dsn, name).get("events", 0) < total * k // (KILLS + 1):
            assert proc.poll() is None, "the projection exited before the kill"
            assert time.monotonic() < deadline, "no progress before the kill"
            time.sleep(0.02)
        before = _stats(dsn, name).get("events", 0)
        killed += _terminate(app_name, busy=k % 2 == 0)
        deadline = time.monotonic() + 60
        while _stats(dsn, name).get("events", 0) <= before:
            assert proc.poll() is None, f"the projection exited after kill {k}"
            assert time.monotonic() < deadline, f"no batch committed after kill {k}"
            time.sleep(0.02)
    return killed


@pytest.mark.parametrize("name", sorted(PACE))
def test_connections_killed_mid_run_reconnects_and_equals_an_uninterrupted_run(
    settings: Settings, published: list[CanonicalEvent], schemas: tuple[str, str],
    unique: str, repo_root: Path, tmp_path: Path, name: str,
) -> None:
    disrupted, reference = schemas
    app_name = f"fb_connloss_{name}_{unique}"
    topics = sorted(app.build_projection(name, settings).topics)
    total = sum(1 for e in published if canonical_topic(e.resource_type) in topics)
    dlq_before = _dead_letters(settings, name)
    log = tmp_path / "projection.log"
    proc = _spawn(name, _with_app_name(disrupted, app_name), f"{name}-connloss-{unique}",
                  repo_root, log)
    try:
        killed = _kill_while_applying(proc, disrupted, app_name, name, total)
        assert proc.wait(180) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert killed >= KILLS, "every kill must hit a live connection of the projection"
    stderr = log.read_text(errors="replace")
    assert "Traceback" not in stderr
    assert "SYN0" not in stderr and "Doe" not in stderr, "row values reached the log"
    assert "batch apply failed" in stderr, "the kills must have failed some batch"
    assert _dead_letters(settings, name) == dlq_before, "connection loss dead-lettered records"

    app.run(name, load_settings(projections={"dsn": reference}), group=f"{name}-ref-{unique}",
            idle_exit_s=5, install_signals=False)
    marks = watermarks(settings, topics)
    final = _stored_positions(disrupted, name)
    assert {tp: final.get(tp, low) for tp, (low, _) in marks.items()} == {
        tp: high for tp, (_, high) in marks.items()}
    # Each event counted once: a retried batch re-applied nothing (stats commit with rows).
    assert _stats(disrupted, name)["events"] == total
    assert _dump(disrupted, name) == _dump(reference, name)


def test_database_unreachable_at_start_exits_with_one_line_naming_the_host(
    settings: Settings, repo_root: Path,
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "FHIRBUS_PROJECTIONS__DSN":
           f"postgresql://fhirbus:hunter2-secret@127.0.0.1:{port}/readmodels"}
    run = subprocess.run([sys.executable, "-m", "fhirbus.cli", "project", "ehr"], cwd=repo_root,
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert f"cannot connect to PostgreSQL at postgresql://127.0.0.1:{port}/readmodels" in (
        run.stderr)
    assert "Traceback" not in run.stderr and "hunter2" not in run.stderr + run.stdout
