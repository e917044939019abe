"""The docker tier: real Apache Kafka (KRaft), Schema Registry, Kafka Connect with Debezium
and PostgreSQL, started from docker-compose.kafka.yml with testcontainers.

Without a reachable Docker engine every test here is skipped, with the engine's error as the
reason in the test summary: never failed for that reason, never passed without running.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = Path(__file__).resolve().parent
# FHIRBUS_DOCKER_PROFILE=laptop runs the tier on the one-broker laptop profile (README
# "Running on Kafka"); the default is the three-broker file alone.
PROFILE = os.environ.get("FHIRBUS_DOCKER_PROFILE", "three-brokers")
COMPOSE_FILES = (["docker-compose.kafka.yml", "docker-compose.kafka.laptop.yml"]
                 if PROFILE == "laptop" else ["docker-compose.kafka.yml"])
BROKERS = ["kafka-1"] if PROFILE == "laptop" else ["kafka-1", "kafka-2", "kafka-3"]
# The infrastructure; the fhirbus code under test runs in this process and in subprocesses.
INFRA = [*BROKERS, "schema-registry", "connect", "source-db", "readmodel-db"]
SECRETS = {"SOURCE_DB_USER": "fhirbus", "SOURCE_DB_PASSWORD": "docker-tier-source",
           "READMODEL_DB_USER": "fhirbus", "READMODEL_DB_PASSWORD": "docker-tier-readmodel",
           "ANALYTICS_SECRET": "docker-tier-analytics"}


@functools.cache
def docker_unavailable() -> str | None:
    """Why no Docker engine can be used, or None when one answers a ping."""
    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception as exc:
        return f"no Docker engine reachable ({type(exc).__name__}: {exc})"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if DOCKER_DIR not in Path(str(item.fspath)).parents:
            continue
        item.add_marker(pytest.mark.docker)
        if (reason := docker_unavailable()) is not None:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def kafka_env() -> Iterator[dict[str, str]]:
    """The compose stack up (healthchecks passed); the FHIRBUS_* env that points at it."""
    from testcontainers.compose import DockerCompose

    os.environ.update(SECRETS)
    with DockerCompose(ROOT, compose_file_name=COMPOSE_FILES, services=INFRA, wait=True):
        yield {
            "FHIRBUS_KAFKA_BOOTSTRAP": ",".join(
                f"localhost:{19092 + i}" for i in range(len(BROKERS))),
            **({"FHIRBUS_KAFKA_TOPIC_REPLICATION": "1"} if PROFILE == "laptop" else {}),
            "FHIRBUS_SCHEMA_REGISTRY_URL": "http://localhost:8081",
            "FHIRBUS_CONNECT__URL": "http://localhost:8083",
            "FHIRBUS_CDC__SOURCES_FILE": str(
                ROOT / "connectors" / "examples" / "labbilling" / "sources.yaml"),
            "FHIRBUS_CDC__MAPPINGS_DIR": str(
                ROOT / "connectors" / "examples" / "labbilling" / "mappings"),
            # As Connect sees the database (inside the compose network).
            "FHIRBUS_CDC_LABBILLING_DSN": "postgresql://fhirbus@source-db:5432/source",
            "FHIRBUS_LOG_FORMAT": "text",
        }


@pytest.fixture(scope="session")
def source_dsn() -> str:
    """The source database as this process reaches it (published port)."""
    return f"postgresql://fhirbus:{SECRETS['SOURCE_DB_PASSWORD']}@localhost:15432/source"


def fhirbus(env: dict[str, str], *argv: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run the real ``fhirbus`` command line against the stack."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FHIRBUS_")}
    return subprocess.run([sys.executable, "-m", "fhirbus.cli", *argv], cwd=ROOT,
                          env={**clean, **env}, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def brought_up(kafka_env: dict[str, str]) -> dict[str, str]:
    """README "Running on Kafka", steps 2-4: topics, schemas, connectors, each idempotent."""
    for argv in (("topics", "apply"), ("schemas", "register"), ("connectors", "apply")):
        done = fhirbus(kafka_env, *argv)
        assert done.returncode == 0, f"fhirbus {' '.join(argv)}: {done.stderr}"
    return kafka_env


@pytest.fixture
def settings_for(brought_up: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                 tmp_path: Path):  # type: ignore[no-untyped-def]
    from fhirbus.settings import load_settings

    for key in list(os.environ):
        if key.startswith("FHIRBUS_"):
            monkeypatch.delenv(key)
    for key, value in {**brought_up, "FHIRBUS_STATE_DIR": str(tmp_path / "state")}.items():
        monkeypatch.setenv(key, value)
    return load_settings()
