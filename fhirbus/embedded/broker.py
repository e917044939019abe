"""The embedded stack: mock Kafka cluster + schema registry, for one machine and for tests.

``fhirbus broker`` runs it as a process; tests use :class:`EmbeddedStack` in-process, with
fault injection. Everything it holds lives in memory and is gone when it stops.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from types import FrameType

from fhirbus.schemas.topics import CATALOG, TopicSpec

from . import discovery
from .mock_cluster import MockCluster

log = logging.getLogger(__name__)

MEMORY_ONLY_NOTICE = (
    "embedded broker: data is kept in memory only (about 5 MB per partition) and is lost "
    "when this process stops; use a real Kafka cluster (FHIRBUS_KAFKA_BOOTSTRAP) in production"
)


def schema_dir() -> Path:
    return Path(str(resources.files("fhirbus.schemas").joinpath("avro")))


class EmbeddedStack:
    """A mock cluster with the catalog's topics, plus (optionally) the embedded registry."""

    def __init__(
        self,
        num_brokers: int = 1,
        with_registry: bool = True,
        registry_port: int = 0,
        topics: tuple[TopicSpec, ...] = CATALOG,
    ) -> None:
        self.cluster = MockCluster(num_brokers)
        for spec in topics:
            self.cluster.create_topic(spec.name, spec.partitions, spec.replication)
        self.registry = None
        if with_registry:
            from .registry import EmbeddedRegistry

            self.registry = EmbeddedRegistry(schema_dir(), port=registry_port)
            self.registry.start()

    @property
    def bootstrap(self) -> str:
        return self.cluster.bootstrap

    @property
    def registry_url(self) -> str | None:
        return self.registry.url if self.registry else None

    def publish(self, state_dir: Path) -> Path:
        """Tell other fhirbus processes using this state dir where the stack is."""
        started = datetime.now(UTC).isoformat(timespec="seconds")
        record = discovery.EmbeddedStack(self.bootstrap, self.registry_url, os.getpid(), started)
        return discovery.publish(state_dir, record)

    def create_topic(self, name: str, partitions: int = 4, replication: int = 1) -> None:
        self.cluster.create_topic(name, partitions, replication)

    # Fault injection, for tests and chaos drills.
    def broker_down(self, broker_id: int | None = None) -> None:
        for b in self._brokers(broker_id):
            self.cluster.broker_down(b)

    def broker_up(self, broker_id: int | None = None) -> None:
        for b in self._brokers(broker_id):
            self.cluster.broker_up(b)

    def push_request_errors(self, api_key: int, errors: list[int]) -> None:
        self.cluster.push_request_errors(api_key, errors)

    def _brokers(self, broker_id: int | None) -> list[int]:
        return [broker_id] if broker_id else list(range(1, self.cluster.num_brokers + 1))

    def close(self) -> None:
        if self.registry is not None:
            self.registry.stop()
            self.registry = None
        self.cluster.close()

    def __enter__(self) -> EmbeddedStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(state_dir: Path, num_brokers: int, with_registry: bool, registry_port: int) -> int:
    """Run the stack until SIGINT/SIGTERM; returns the process exit code."""
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    with EmbeddedStack(num_brokers, with_registry, registry_port) as stack:
        path = stack.publish(state_dir)
        log.warning(MEMORY_ONLY_NOTICE)
        print(MEMORY_ONLY_NOTICE, flush=True)
        print(f"bootstrap: {stack.bootstrap}", flush=True)
        if stack.registry_url:
            print(f"schema registry: {stack.registry_url}", flush=True)
        print(f"addresses written to {path}", flush=True)
        try:
            stop.wait()
        finally:
            discovery.withdraw(state_dir, os.getpid())
    return 0
