"""Wiring: a projection by name from settings, its store, and its consumer on the runtime.

Each projection is its own consumer group (``fhirbus-projection-<name>``) and its own
process, so each lags, fails and is redeployed on its own.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from fhirbus.consumers.records import Record
from fhirbus.consumers.runtime import ConsumerRuntime, ConsumerSpec
from fhirbus.kafka.config import resolve_registry_url
from fhirbus.schemas.serde import EnvelopeSerde, registry_client
from fhirbus.settings import ConfigError, Settings

from . import analytics, billing, ehr
from .core import Effect, Projection, as_repairs, is_repair
from .metrics import ProjectionMetrics
from .sink import ProjectionSink, prepare
from .store import Store, open_store

NAMES = ("ehr", "billing", "analytics")


def group_id(name: str) -> str:
    return f"fhirbus-projection-{name}"


def stage(name: str) -> str:
    return f"projection-{name}"  # owns dlq.projection-<name>.v1


def build_projection(name: str, settings: Settings) -> Projection:
    ps = settings.projections
    if name == "ehr":
        return ehr.build()
    if name == "billing":
        return billing.build(billing.BillingOptions(ps.billing_order_prices,
                                                    ps.billing_currency))
    if name == "analytics":
        secret = ps.analytics_secret.get_secret_value() if ps.analytics_secret else None
        try:
            opts = analytics.options_from(secret, ps.analytics_date_granularity)
        except analytics.MissingSecret as exc:
            raise ConfigError(str(exc)) from None
        return analytics.build(opts)
    raise ConfigError(f"unknown projection {name!r}: expected one of {', '.join(NAMES)}")


def dsn_for(name: str, settings: Settings) -> str:
    if settings.projections.dsn:
        return settings.projections.dsn
    return f"sqlite://{settings.state_dir / 'projections' / f'{name}.sqlite'}"


def open_for(name: str, settings: Settings) -> Store:
    return open_store(dsn_for(name, settings), durable=settings.projections.durable_commits)


class Handler:
    """record -> effects; an empty value (a tombstone) projects to nothing."""

    def __init__(self, projection: Projection, delay_s: float = 0.0) -> None:
        self.project = projection.project
        self.delay_s = delay_s  # tests only: widens the window a SIGKILL lands in

    def __call__(self, record: Record) -> list[Effect]:
        if self.delay_s:
            time.sleep(self.delay_s)
        if record.value is None:
            return []
        effects = self.project(record.value)
        return as_repairs(effects) if is_repair(record.value) else effects


def consumer_spec(
    projection: Projection, settings: Settings, group: str | None = None,
    topics: Sequence[str] | None = None, delay_s: float = 0.0,
) -> ConsumerSpec:
    serde = EnvelopeSerde(registry_client(resolve_registry_url(settings)))
    return ConsumerSpec(
        stage=stage(projection.name),
        group_id=group or group_id(projection.name),
        topics=list(topics or projection.topics),
        handler=Handler(projection, delay_s),
        decode=lambda raw, topic: None if raw is None else serde.deserialize(raw, topic),
    )


def runtime_for(
    name: str, settings: Settings, store: Store, generation: int | None = None, **spec: Any
) -> tuple[ConsumerRuntime, ProjectionSink]:
    projection = build_projection(name, settings)
    prepare(store, projection, generation)
    metrics = ProjectionMetrics(name)
    sink = ProjectionSink(store, projection, generation, metrics)
    runtime = ConsumerRuntime(consumer_spec(projection, settings, **spec), settings, sink=sink)
    metrics.lag_source = runtime.metrics.lag
    return runtime, sink


def run(
    name: str, settings: Settings, *, max_records: int | None = None,
    idle_exit_s: float | None = None, install_signals: bool = True, **spec: Any,
) -> int:
    store = open_for(name, settings)
    try:
        runtime, _ = runtime_for(name, settings, store, **spec)
        if install_signals:
            runtime.install_signal_handlers()
        return runtime.run(max_records=max_records, idle_exit_s=idle_exit_s)
    finally:
        store.close()
