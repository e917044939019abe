"""SIGKILL ``fhirbus project ehr|billing|analytics`` mid-batch and restart it, on the embedded
broker, with the read model in SQLite and in PostgreSQL: the final read model equals an
uninterrupted run's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhirbus.kafka.config import producer_config, resolve_registry_url
from fhirbus.kafka.producer import Producer
from fhirbus.projections import app, testing
from fhirbus.projections.rebuild import watermarks
from fhirbus.projections.store import open_store
from fhirbus.schemas.envelope import CanonicalEvent
from fhirbus.schemas.serde import EnvelopeSerde, registry_client
from fhirbus.schemas.topics import canonical_topic
from fhirbus.settings import Settings, load_settings

pytestmark = pytest.mark.slow
SECRET = "sigkill-test-analytics-key"
PROJECTIONS = ("ehr", "billing", "analytics")


def publish(settings: Settings, events: list[CanonicalEvent]) -> None:
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
    if not getattr(publish, "done", False):
        publish(settings, history)
        publish.done = True  # type: ignore[attr-defined]
    return history


@pytest.fixture(params=testing.BACKENDS)
def dsns(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two read-model databases on one backend: the crashed run's and the reference's."""
    if request.param == "postgresql" and (why := testing.pg_available()):
        pytest.skip(why)
    with testing.backend_dsn(request.param, tmp_path) as a, \
            testing.backend_dsn(request.param, tmp_path) as b:
        yield a, b


def _events_applied(dsn: str, name: str) -> int:
    return testing.stored_stats(dsn, name).get("events", 0)


def _spawn(name: str, dsn: str, group: str, repo: Path, idle_exit: float | None
           ) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "fhirbus.cli", "project", name, "--group", group,
           "--apply-delay", "0.002"]
    if idle_exit is not None:
        cmd += ["--idle-exit", str(idle_exit)]
    env = {**os.environ, "FHIRBUS_RUNTIME__BATCH_SIZE": "200", "FHIRBUS_PROJECTIONS__DSN": dsn,
           "FHIRBUS_PROJECTIONS__ANALYTICS_SECRET": SECRET}
    return subprocess.Popen(cmd, cwd=repo, env=env, stderr=subprocess.DEVNULL)


def _dump(dsn: str, name: str) -> dict[str, list]:
    store = open_store(dsn)
    try:
        return testing.dump(store, app.build_projection(name, _settings(dsn)))
    finally:
        store.close()


def _settings(dsn: str) -> Settings:
    return load_settings(projections={"dsn": dsn, "analytics_secret": SECRET})


@pytest.mark.parametrize("name", PROJECTIONS)
def test_sigkill_mid_batch_then_restart_equals_an_uninterrupted_run(
    settings: Settings, published: list[CanonicalEvent], dsns: tuple[str, str], unique: str,
    repo_root: Path, name: str,
) -> None:
    crashed, reference = dsns
    topics = set(app.build_projection(name, _settings(crashed)).topics)
    total = sum(1 for e in published if canonical_topic(e.resource_type) in topics)
    first = _spawn(name, crashed, f"{name}-kill-{unique}", repo_root, idle_exit=None)
    deadline = time.monotonic() + 90
    while _events_applied(crashed, name) < total // 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    killed_at = _events_applied(crashed, name)
    assert 0 < killed_at < total, "the kill must land while work remains"
    stored = testing.stored_positions(crashed, name)
    marks = watermarks(settings, sorted(topics))
    # Positions and counters share each batch's transaction: what is stored is what was applied.
    assert sum(stored.get(tp, low) - low for tp, (low, _) in marks.items()) == killed_at
    remaining = sum(high - stored.get(tp, low) for tp, (low, high) in marks.items())
    assert remaining == total - killed_at

    second = _spawn(name, crashed, f"{name}-kill-{unique}", repo_root, idle_exit=5)
    assert second.wait(180) == 0

    app.run(name, _settings(reference), group=f"{name}-ref-{unique}", idle_exit_s=5,
            install_signals=False)
    # The restart resumed at the stored offsets: it consumed exactly what was left, no more
    # (a restart from the beginning, or from the group's Kafka offsets, would re-read some).
    assert _events_applied(crashed, name) - killed_at == remaining
    final = testing.stored_positions(crashed, name)
    assert {tp: final.get(tp, low) for tp, (low, _) in marks.items()} == {
        tp: high for tp, (_, high) in marks.items()}
    assert _dump(crashed, name) == _dump(reference, name)
