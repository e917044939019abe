"""``fhirbus project status`` against the embedded broker: lag from the offsets stored with the
read model, counters from the same transaction, before and after the projection runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhirbus.cli import main
from fhirbus.kafka.config import producer_config, resolve_registry_url
from fhirbus.kafka.producer import Producer
from fhirbus.projections import app, testing
from fhirbus.projections.sink import prepare
from fhirbus.projections.status import status_of
from fhirbus.schemas.serde import EnvelopeSerde, registry_client
from fhirbus.schemas.topics import canonical_topic
from fhirbus.settings import Settings, load_settings


def test_status_reports_lag_before_and_zero_lag_after_catching_up(
    settings: Settings, tmp_path: Path, unique: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dsn = f"sqlite:///{tmp_path}/ehr.sqlite"
    local = load_settings(projections={"dsn": dsn})
    events = testing.synthetic_history(5)
    topics = set(app.build_projection("ehr", local).topics)
    mine = [e for e in events if canonical_topic(e.resource_type) in topics]
    before = {t: _high(local, t) for t in topics}
    serde = EnvelopeSerde(registry_client(resolve_registry_url(local)))
    producer = Producer(producer_config(local))
    for e in mine:
        producer.send(canonical_topic(e.resource_type),
                      serde.serialize(e, canonical_topic(e.resource_type)), e.key)
    assert producer.flush(30) == 0
    producer.close(10)

    store = app.open_for("ehr", local)
    try:
        assert status_of("ehr", local, store)["started"] is False
        prepare(store, app.build_projection("ehr", local))  # what a first start does
        waiting = status_of("ehr", local, store)
    finally:
        store.close()
    # Nothing stored yet: lag counts every record on the topics, this test's and earlier ones'.
    assert waiting["lag"] == sum(before.values()) + len(mine) > 0
    assert waiting["events"] == 0
    app.run("ehr", local, group=f"status-{unique}", idle_exit_s=3, install_signals=False)

    store = app.open_for("ehr", local)
    try:
        status = status_of("ehr", local, store)
    finally:
        store.close()
    # Other tests in this module's stack may have published earlier: those records count as
    # consumed too (the projection read from the beginning), so lag is zero either way.
    assert status["lag"] == 0
    assert status["events"] == sum(before.values()) + len(mine)
    assert status["applied"] > 0

    monkeypatch.setenv("FHIRBUS_PROJECTIONS__DSN", dsn)
    assert main(["project", "status", "ehr"]) == 0
    out = capsys.readouterr().out
    assert f"events={status['events']}" in out
    assert "lag=0 over" in out


def _high(settings: Settings, topic: str) -> int:
    from fhirbus.projections.rebuild import watermarks

    return sum(high - low for (low, high) in watermarks(settings, [topic]).values())
