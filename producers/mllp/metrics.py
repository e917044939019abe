"""Listener metrics, per feed: OpenTelemetry instruments plus plain counters.

The plain counters serve tests, the benchmark and the periodic INFO log line; the OTel
instruments go wherever telemetry is configured to export.

The counters are exported as *observable* counters that read the plain counts when a
reader collects: a synchronous ``Counter.add`` costs several microseconds per call in the
SDK (attribute checks, a measurement object, the aggregation lock), and the listener made
three of them per message. The exported values are the same cumulative sums. ACK latency
stays a synchronous histogram: its distribution needs every value.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Observation

from fhirbus import telemetry

# Plain count name -> exported counter name.
_COUNTERS = {
    "received": "hl7.mllp.received",
    "accepted": "hl7.mllp.accepted",
    "spooled": "hl7.mllp.spooled",
    "duplicates": "hl7.mllp.duplicates",
    "forwarded": "hl7.mllp.spool_forwarded",
    "store_failed": "hl7.mllp.store_failed",
    "refused": "hl7.mllp.spool_refused",
    "producer_recreated": "hl7.mllp.producer_recreated",
}


class ListenerMetrics:
    def __init__(
        self, listener_id: str, feed: str, depth: Callable[[], int | None]
    ) -> None:
        self.attrs = {"feed": feed, "listener_id": listener_id}
        self.counts: Counter[str] = Counter()
        self._rejected: Counter[tuple[str, str]] = Counter()  # (reason, code) -> count
        self._depth = depth
        meter = telemetry.meter("fhirbus.hl7.listener")
        unit = "{message}"
        for name, exported in _COUNTERS.items():
            meter.create_observable_counter(exported, callbacks=[self._observer(name)], unit=unit)
        meter.create_observable_counter(
            "hl7.mllp.rejected", callbacks=[self._observe_rejected], unit=unit
        )
        self._latency = meter.create_histogram(
            "hl7.mllp.ack_latency", unit="ms", description="frame received to ACK written"
        )
        meter.create_observable_gauge(
            "hl7.mllp.spool_depth", callbacks=[self._observe_depth], unit=unit
        )

    def _observer(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            # Called on the reader's thread; reading one int of a dict is atomic.
            yield Observation(self.counts.get(name, 0), self.attrs)

        return observe

    def _observe_rejected(self, _options: CallbackOptions) -> Iterable[Observation]:
        # dict.copy is one C call, so the loop thread cannot change the dict mid-iteration.
        for (reason, code), n in dict.copy(self._rejected).items():
            yield Observation(n, {**self.attrs, "reason": reason, "code": code})

    def _observe_depth(self, _options: CallbackOptions) -> Iterable[Observation]:
        depth = self._depth()  # None: this process does not report it (or could not read it)
        if depth is not None:
            yield Observation(depth, self.attrs)

    def received(self) -> None:
        self.counts["received"] += 1

    def accepted(self, spooled: bool) -> None:
        self.counts["accepted"] += 1
        if spooled:
            self.counts["spooled"] += 1

    def rejected(self, reason: str, code: str) -> None:
        self.counts[f"rejected.{reason}"] += 1
        self.counts["rejected"] += 1
        self._rejected[reason, code] += 1

    def duplicate(self) -> None:
        self.counts["duplicates"] += 1

    def store_failed(self) -> None:
        self.counts["store_failed"] += 1

    def forwarded(self, n: int) -> None:
        self.counts["forwarded"] += n

    def refused(self) -> None:
        """A spooled record the broker will never take went to the refused table."""
        self.counts["refused"] += 1

    def producer_recreated(self) -> None:
        self.counts["producer_recreated"] += 1

    def ack_latency(self, seconds: float) -> None:
        self._latency.record(seconds * 1000.0, self.attrs)

    @property
    def spool_depth(self) -> int | None:
        return self._depth()
