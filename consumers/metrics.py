"""Consumer runtime metrics (OpenTelemetry): consumed, failed, retried, dead-lettered,
handler latency, and consumer lag from librdkafka's statistics."""

from __future__ import annotations

from collections.abc import Iterable
from threading import Lock

import orjson
from opentelemetry.metrics import CallbackOptions, Observation

from fhirbus import telemetry


class RuntimeMetrics:
    def __init__(self, group: str) -> None:
        m = telemetry.meter("fhirbus.consumers")
        self.attrs = {"consumer_group": group}
        self.consumed = m.create_counter("fhirbus.consumer.consumed", unit="{record}")
        self.failed = m.create_counter("fhirbus.consumer.failed", unit="{attempt}")
        self.retried = m.create_counter("fhirbus.consumer.retried", unit="{attempt}")
        self.dead_lettered = m.create_counter("fhirbus.consumer.dead_lettered", unit="{record}")
        self.latency = m.create_histogram("fhirbus.consumer.handler_latency", unit="ms")
        self._lag: dict[tuple[str, int], int] = {}
        self._lock = Lock()
        m.create_observable_gauge(
            "fhirbus.consumer.lag", callbacks=[self._observe_lag], unit="{record}"
        )
        # Plain counts too, for `fhirbus status` and tests, without an exporter.
        self.counts = {"consumed": 0, "failed": 0, "retried": 0, "dead_lettered": 0}

    def add(self, name: str, n: int = 1) -> None:
        getattr(self, name).add(n, self.attrs)
        self.counts[name] += n

    def record_batch(self, records: int, seconds: float) -> None:
        """Per-batch accounting keeps metric calls off the per-record hot path; latency is
        the batch's mean per record."""
        if records:
            self.add("consumed", records)
            self.latency.record(seconds * 1000 / records, self.attrs)

    def on_stats(self, stats_json: str) -> None:
        """librdkafka stats callback: per-partition consumer_lag of assigned partitions."""
        stats = orjson.loads(stats_json)
        lag: dict[tuple[str, int], int] = {}
        for topic, tdata in stats.get("topics", {}).items():
            for pid, pdata in tdata.get("partitions", {}).items():
                value = pdata.get("consumer_lag", -1)
                if int(pid) >= 0 and value >= 0:
                    lag[(topic, int(pid))] = value
        with self._lock:
            self._lag = lag

    def lag(self) -> dict[tuple[str, int], int]:
        with self._lock:
            return dict(self._lag)

    def _observe_lag(self, _options: CallbackOptions) -> Iterable[Observation]:
        for (topic, partition), value in self.lag().items():
            yield Observation(value, {**self.attrs, "topic": topic, "partition": partition})
