"""``fhirbus project status`` against the embedded broker: lag from the offsets stored with the
read model, counters from the same transaction, before and after the projection runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

from fhirbus import telemetry
from fhirbus.cli import main
from fhirbus.kafka.config import producer_config, resolve_registry_url
from fhirbus.kafka.producer import Producer
from fhirbus.projections import app, testing
from fhirbus.projections.rebuild import watermarks
from fhirbus.projections.sink import prepare
from fhirbus.projections.status import status_of
from fhirbus.schemas.envelope import CanonicalEvent
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
    _publish(local, mine)

    store = app.open_for("ehr", local)
    try:
        unstarted = status_of("ehr", local, store)
        prepare(store, app.build_projection("ehr", local))  # what a first start does
        waiting = status_of("ehr", local, store)
    finally:
        store.close()
    # Nothing stored yet: lag counts every record on the topics, this test's and earlier ones'.
    assert waiting["lag"] == sum(before.values()) + len(mine) > 0
    # Before a first start too: the backlog it will work through.
    assert unstarted["started"] is False and unstarted["lag"] == waiting["lag"]
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
    return sum(high - low for (low, high) in watermarks(settings, [topic]).values())


def test_otel_instruments_carry_applied_duplicates_stale_latency_and_lag(
    settings: Settings, tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A private provider, not the global one: the API lets a process set that only once, and
    # other tests (anything through fhirbus.cli.main) may already have set it.
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    monkeypatch.setattr(telemetry, "meter", provider.get_meter)
    # Stats often enough that librdkafka reports lag within the short run.
    local = load_settings(projections={"dsn": f"sqlite:///{tmp_path}/ehr.sqlite"},
                          kafka_extra={"statistics.interval.ms": "100"})
    topics = set(app.build_projection("ehr", local).topics)
    mine = [e for e in testing.synthetic_history(4, seed=11)
            if canonical_topic(e.resource_type) in topics]
    # Newest first, so older versions arrive after newer ones (stale), then all again
    # (duplicates).
    _publish(local, [*reversed(mine), *mine])
    try:
        app.run("ehr", local, group=f"otel-{unique}", idle_exit_s=3, install_signals=False)
        store = app.open_for("ehr", local)
        try:
            status = status_of("ehr", local, store)
        finally:
            store.close()
        found = _points(reader)
    finally:
        provider.shutdown()
    attrs = (("projection", "ehr"),)
    assert found["fhirbus.projection.applied"][attrs] == status["applied"] > 0
    assert found["fhirbus.projection.skipped_duplicates"][attrs] == (
        status["skipped_duplicates"]) >= len(mine)
    assert found["fhirbus.projection.ignored_stale"][attrs] == status["ignored_stale"] > 0
    assert found["fhirbus.projection.apply_latency"][attrs] == status["batches"] > 0
    # Caught up: a zero lag point for (at least) every partition that holds records.
    lag = {(a["topic"], a["partition"]): v for a, v in
           ((dict(k), v) for k, v in found["fhirbus.projection.lag"].items())
           if a["projection"] == "ehr"}
    assert set(lag) >= {tp for tp, (low, high) in watermarks(local, sorted(topics)).items()
                        if high > low}
    assert set(lag.values()) == {0} and status["lag"] == 0


def _publish(settings: Settings, events: list[CanonicalEvent]) -> None:
    serde = EnvelopeSerde(registry_client(resolve_registry_url(settings)))
    producer = Producer(producer_config(settings))
    for e in events:
        topic = canonical_topic(e.resource_type)
        producer.send(topic, serde.serialize(e, topic), e.key)
    assert producer.flush(30) == 0
    producer.close(10)


def _points(reader: InMemoryMetricReader) -> dict[str, dict[tuple, float]]:
    """metric name -> sorted attributes -> value (a histogram's: its count)."""
    out: dict[str, dict[tuple, float]] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    value = point.count if isinstance(point, HistogramDataPoint) else point.value
                    out.setdefault(metric.name, {})[tuple(sorted(point.attributes.items()))] = value
    return out
