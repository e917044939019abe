"""Where a batch's effects go, together with the positions that produced them.

A sink applies a batch atomically with its positions: KafkaSink publishes ``Publish``
effects and confirms every delivery before the runtime commits offsets to Kafka; a
projection's database sink writes rows and (topic, partition) -> offset in one transaction,
and is asked for those positions when partitions are assigned.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import Protocol

from opentelemetry import context as otel_context

from fhirbus import telemetry
from fhirbus.kafka.producer import DeliveryError, Producer

from .errors import DownstreamUnavailable, PermanentError, TransientError
from .records import Publish, Record

TopicPartition = tuple[str, int]


class Sink(Protocol):
    def apply(self, records: Sequence[Record], positions: dict[TopicPartition, int]) -> None:
        """Apply all effects and remember positions (next offset to read), atomically."""

    def stored_positions(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Positions this sink committed itself; {} means: trust Kafka's committed offsets."""


class KafkaSink:
    """Publishes Publish effects; positions live in Kafka's committed offsets."""

    def __init__(self, producer: Producer, flush_timeout_s: float = 60.0) -> None:
        self._producer = producer
        self._timeout = flush_timeout_s

    def apply(self, records: Sequence[Record], positions: dict[TopicPartition, int]) -> None:
        futures: list[Future] = []
        for record in records:
            publishes = [e for e in record.effects if isinstance(e, Publish)]
            if publishes:
                futures += send_in_trace(self._producer, publishes, record.headers)
        confirm(self._producer, futures, self._timeout)

    def stored_positions(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return {}


def send_in_trace(producer: Producer, publishes: Sequence[Publish],
                  parent: Sequence[tuple[str, bytes | None]] | None) -> list[Future]:
    """Send ``publishes`` under the trace context in ``parent`` headers (the record that
    caused them). Effects and dead letters are sent after the handler, outside the record's
    consumer span; this keeps their PRODUCER spans in the trace the record arrived with,
    so one HL7 message is one trace from the listener to every read model."""
    traced = bool(parent) and any(k == "traceparent" for k, _ in parent)  # type: ignore[union-attr]
    token = otel_context.attach(telemetry.extract(parent)) if traced else None
    try:
        return [producer.send(p.topic, p.value, p.key, p.headers) for p in publishes]
    finally:
        if token is not None:
            otel_context.detach(token)


def confirm(producer: Producer, futures: list[Future], timeout_s: float) -> None:
    """Wait until the broker confirmed every future, or raise a classified error."""
    if not futures:
        return
    if producer.flush(timeout_s) > 0:
        raise DownstreamUnavailable("broker did not confirm the batch in time")
    for fut in futures:
        exc = fut.exception(timeout=0)
        if isinstance(exc, DeliveryError):
            if exc.retriable:
                raise TransientError(str(exc)) from exc
            raise PermanentError(str(exc)) from exc
        if exc is not None:
            raise exc
