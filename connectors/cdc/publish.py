"""Kafka side of the slot reader: publish a batch and return only when every record is acked.

The producer is idempotent with ``acks=all`` (fhirbus/kafka/config.py), so records with one
key stay in order on one partition. The partitioner is murmur2, as Kafka's Java client
(and so Debezium on Kafka Connect) uses: one row lands on the same partition whichever CDC
path published it.
"""

from __future__ import annotations

import time

from fhirbus.kafka.config import producer_config
from fhirbus.kafka.producer import DeliveryError, Producer
from fhirbus.settings import Settings

from .changes import format_lsn
from .events import Record


class PublishError(Exception):
    """Kafka did not acknowledge the whole batch; nothing may be advanced past it."""


class Publisher:
    def __init__(self, settings: Settings, source: str) -> None:
        self._settings = settings
        self._source = source
        self._producer: Producer | None = None

    def _client(self) -> Producer:
        if self._producer is None:
            conf = producer_config(self._settings, partitioner="murmur2_random",
                                   **{"client.id": f"fhirbus-cdc-{self._source}"})
            # No span per record: a CDC batch can hold thousands of rows, and the trace of a
            # row starts at the canonicalizer (which links it to the LSN in the headers).
            self._producer = Producer(conf, trace_propagation=False)
        return self._producer

    def publish(self, records: list[Record]) -> None:
        """Send every record, then wait for every acknowledgement (or raise PublishError)."""
        producer = self._client()
        futures = []
        for r in records:
            headers = [("cdc.source", self._source), ("cdc.lsn", format_lsn(r.lsn)),
                       ("cdc.txid", str(r.xid))]
            futures.append(producer.send(r.topic, r.value, r.key, headers=headers))
        timeout = self._settings.cdc.publish_timeout_s
        deadline = time.monotonic() + timeout
        if producer.flush(timeout) > 0:
            self.reset()
            raise PublishError(f"Kafka did not acknowledge the batch within {timeout:.0f} s")
        for future in futures:
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
            except (DeliveryError, TimeoutError) as exc:
                self.reset()
                raise PublishError(str(exc)) from None

    def reset(self) -> None:
        """Drop the producer after a failure: an idempotent producer that lost a record
        cannot continue its sequence, so the retry starts with a fresh one."""
        if self._producer is not None:
            self._producer.close(timeout=0)
            self._producer = None

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=self._settings.cdc.publish_timeout_s)
            self._producer = None
