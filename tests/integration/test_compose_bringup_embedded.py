"""The README "Running on Kafka" bring-up commands on the embedded stack, as far as it goes:
`topics apply` checks (the mock cannot create topics through the admin API) and `schemas
register` is idempotent. Their real-cluster runs are in tests/docker/test_docker_bringup.py."""

from __future__ import annotations

import pytest

from fhirbus.cli import main
from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.schemas.topics import CATALOG
from fhirbus.settings import Settings


def test_topics_apply_on_the_embedded_broker_checks_every_catalog_topic(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["topics", "apply"]) == 0
    out = capsys.readouterr().out
    assert all(f"present    {spec.name}" in out for spec in CATALOG)
    assert "every catalog topic exists" in out


def test_topics_apply_reports_a_missing_topic_instead_of_pretending(
    settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhirbus.schemas import topics

    extra = topics.TopicSpec("never.created.v1", "k", "bytes", 1, "operational", "test", "x")
    monkeypatch.setattr(topics, "CATALOG", (*topics.CATALOG, extra))
    assert main(["topics", "apply"]) == 1
    captured = capsys.readouterr()
    assert "MISSING    never.created.v1" in captured.out and "restart" in captured.err


def test_schemas_register_twice_gives_the_same_ids(
    embedded_stack: EmbeddedStack, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schemas", "register"]) == 0
    first = capsys.readouterr().out
    assert main(["schemas", "register"]) == 0
    assert capsys.readouterr().out == first and ": id " in first


def test_topics_apply_creates_topics_with_the_configured_replication(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The laptop profile (one broker) sets FHIRBUS_KAFKA_TOPIC_REPLICATION=1; the catalog's
    topics must then be created with replication 1 and no min.insync.replicas above it."""
    from fhirbus.kafka import admin
    from fhirbus.kafka.admin import ApplyReport

    asked: list[tuple] = []

    def record(settings: Settings, dry_run: bool, catalog: tuple) -> ApplyReport:
        asked.extend(catalog)
        return ApplyReport(unchanged=[s.name for s in catalog])

    monkeypatch.setattr(admin, "apply_catalog", record)
    monkeypatch.setenv("FHIRBUS_KAFKA_BOOTSTRAP", "kafka-1:9092")
    monkeypatch.setenv("FHIRBUS_KAFKA_TOPIC_REPLICATION", "1")
    assert main(["topics", "apply"]) == 0
    assert [s.name for s in asked] == [s.name for s in CATALOG]
    assert {s.replication for s in asked} == {1}
    assert all("min.insync.replicas" not in s.kafka_config() for s in asked)
    monkeypatch.delenv("FHIRBUS_KAFKA_TOPIC_REPLICATION")
    asked.clear()
    assert main(["topics", "apply"]) == 0
    assert [s.replication for s in asked] == [s.replication for s in CATALOG]
    capsys.readouterr()
