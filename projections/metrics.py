"""Per-projection metrics: applied, skipped duplicates, ignored stale versions, apply
latency (OpenTelemetry, labelled by projection), plus lag from the runtime's statistics.

The same counters are also added to the read model's ``stats`` table inside each batch's
transaction, so ``fhirbus project status`` reports them from any process, exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from opentelemetry.metrics import CallbackOptions, Observation

from fhirbus import telemetry

LagSource = Callable[[], dict[tuple[str, int], int]]


@dataclass
class ProjectionMetrics:
    projection: str
    counts: dict[str, int] = field(default_factory=lambda: {
        "events": 0, "applied": 0, "duplicates": 0, "stale": 0, "batches": 0,
    })
    latencies_ms: list[float] = field(default_factory=list)
    lag_source: LagSource | None = None

    def __post_init__(self) -> None:
        m = telemetry.meter("fhirbus.projections")
        self.attrs = {"projection": self.projection}
        self._applied = m.create_counter("fhirbus.projection.applied", unit="{event}")
        self._duplicates = m.create_counter("fhirbus.projection.skipped_duplicates",
                                            unit="{event}")
        self._stale = m.create_counter("fhirbus.projection.ignored_stale", unit="{event}")
        self._latency = m.create_histogram("fhirbus.projection.apply_latency", unit="ms")
        m.create_observable_gauge("fhirbus.projection.lag", callbacks=[self._observe_lag],
                                  unit="{record}")

    def record_batch(self, events: int, counts: dict[str, int], seconds: float) -> None:
        ms = seconds * 1000
        self.counts["events"] += events
        self.counts["batches"] += 1
        for name in ("applied", "duplicates", "stale"):
            self.counts[name] += counts.get(name, 0)
        self._applied.add(counts.get("applied", 0), self.attrs)
        self._duplicates.add(counts.get("duplicates", 0), self.attrs)
        self._stale.add(counts.get("stale", 0), self.attrs)
        self._latency.record(ms, self.attrs)
        self.latencies_ms.append(ms)
        del self.latencies_ms[:-1000]  # a window for status output, not an unbounded list

    def lag(self) -> dict[tuple[str, int], int]:
        return self.lag_source() if self.lag_source else {}

    def _observe_lag(self, _options: CallbackOptions) -> Iterable[Observation]:
        for (topic, partition), value in self.lag().items():
            yield Observation(value, {**self.attrs, "topic": topic, "partition": partition})
