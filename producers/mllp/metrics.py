"""Listener metrics, per feed: OpenTelemetry instruments plus plain counters.

The plain counters serve tests, the benchmark and the periodic INFO log line; the OTel
instruments go wherever telemetry is configured to export.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Observation

from fhirbus import telemetry


class ListenerMetrics:
    def __init__(self, listener_id: str, feed: str, depth: Callable[[], int]) -> None:
        self.attrs = {"feed": feed, "listener_id": listener_id}
        self.counts: Counter[str] = Counter()
        self._depth = depth
        meter = telemetry.meter("fhirbus.hl7.listener")
        unit = "{message}"
        self._received = meter.create_counter("hl7.mllp.received", unit=unit)
        self._accepted = meter.create_counter("hl7.mllp.accepted", unit=unit)
        self._rejected = meter.create_counter("hl7.mllp.rejected", unit=unit)
        self._spooled = meter.create_counter("hl7.mllp.spooled", unit=unit)
        self._duplicates = meter.create_counter("hl7.mllp.duplicates", unit=unit)
        self._forwarded = meter.create_counter("hl7.mllp.spool_forwarded", unit=unit)
        self._failed = meter.create_counter("hl7.mllp.store_failed", unit=unit)
        self._latency = meter.create_histogram(
            "hl7.mllp.ack_latency", unit="ms", description="frame received to ACK written"
        )
        meter.create_observable_gauge(
            "hl7.mllp.spool_depth", callbacks=[self._observe_depth], unit=unit
        )

    def _observe_depth(self, _options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(self._depth(), self.attrs)

    def _add(self, name: str, instrument: object, n: int = 1, **extra: str) -> None:
        self.counts[name] += n
        instrument.add(n, {**self.attrs, **extra} if extra else self.attrs)  # type: ignore[attr-defined]

    def received(self) -> None:
        self._add("received", self._received)

    def accepted(self, spooled: bool) -> None:
        self._add("accepted", self._accepted)
        if spooled:
            self._add("spooled", self._spooled)

    def rejected(self, reason: str, code: str) -> None:
        self.counts[f"rejected.{reason}"] += 1
        self._add("rejected", self._rejected, reason=reason, code=code)

    def duplicate(self) -> None:
        self._add("duplicates", self._duplicates)

    def store_failed(self) -> None:
        self._add("store_failed", self._failed)

    def forwarded(self, n: int) -> None:
        self._add("forwarded", self._forwarded, n)

    def ack_latency(self, seconds: float) -> None:
        self._latency.record(seconds * 1000.0, self.attrs)

    @property
    def spool_depth(self) -> int:
        return self._depth()
