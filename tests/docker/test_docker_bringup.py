"""README "Running on Kafka": the bring-up commands reach the declared state on a real
cluster and a second run changes nothing."""

from __future__ import annotations

from fhirbus.schemas.topics import CATALOG
from tests.docker.conftest import fhirbus


def test_bringup_commands_are_idempotent_on_real_kafka(brought_up: dict[str, str]) -> None:
    topics = fhirbus(brought_up, "topics", "apply")
    assert topics.returncode == 0, topics.stderr
    assert "created" not in topics.stdout and "FAILED" not in topics.stdout
    assert all(spec.name in topics.stdout for spec in CATALOG)

    first = fhirbus(brought_up, "schemas", "register")
    second = fhirbus(brought_up, "schemas", "register")
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout, "registering again yields the same ids"

    connectors = fhirbus(brought_up, "connectors", "apply")
    assert (connectors.returncode, connectors.stdout) == (0, "fhirbus-cdc-labbilling: unchanged\n")
    status = fhirbus(brought_up, "connectors", "status")
    assert status.returncode == 0 and "connector RUNNING" in status.stdout, status.stdout
