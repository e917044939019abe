"""Reading topics to their high watermark without joining a group (assign, not subscribe),
so a reconciliation run never disturbs any consumer's offsets or triggers a rebalance."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

from confluent_kafka import Consumer, Message, TopicPartition

from fhirbus.kafka.config import consumer_config
from fhirbus.settings import Settings


class ScanTimeout(RuntimeError):
    pass


def _consumer(settings: Settings, group: str | None = None) -> Consumer:
    return Consumer(consumer_config(settings, group or f"fhirbus-reconcile-{uuid.uuid4().hex}",
                                    **{"enable.auto.commit": False}))


def partitions(consumer: Consumer, topic: str) -> list[int]:
    meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if meta is None or meta.error is not None:
        return []
    return sorted(meta.partitions)


def scan(settings: Settings, topic: str, stops: dict[int, int] | None = None,
         timeout_s: float = 300.0) -> Iterator[Message]:
    """Every record of ``topic`` from its low watermark up to ``stops`` (default: the high
    watermark when the scan starts): a consistent cut, however fast producers write."""
    consumer = _consumer(settings)
    try:
        marks = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                 for p in partitions(consumer, topic)}
        # With stops, a partition it does not name is not read at all.
        ends = {p: high if stops is None else min(high, stops.get(p, 0))
                for p, (_, high) in marks.items()}
        pending = {p for p, (low, _) in marks.items() if ends[p] > low}
        consumer.assign([TopicPartition(topic, p, marks[p][0]) for p in pending])
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise ScanTimeout(f"reading {topic} did not reach its end in {timeout_s:.0f}s; "
                                  "check the brokers, then run again")
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is not None or msg.partition() not in pending:
                    continue
                if msg.offset() < ends[msg.partition()]:
                    yield msg
                if msg.offset() + 1 >= ends[msg.partition()]:
                    pending.discard(msg.partition())
    finally:
        consumer.close()


def committed(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """A group's committed offsets on ``topic`` (partitions it never committed: absent)."""
    consumer = _consumer(settings, group)
    try:
        tps = [TopicPartition(topic, p) for p in partitions(consumer, topic)]
        return {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)
                if tp.offset >= 0}
    finally:
        consumer.close()


def read_one(settings: Settings, topic: str, partition: int, offset: int,
             timeout_s: float = 30.0) -> Message:
    consumer = _consumer(settings)
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None and msg.offset() == offset:
                return msg
        raise LookupError(f"{topic}[{partition}]@{offset} could not be read (gone from "
                          "retention?); resolve the item by hand")
    finally:
        consumer.close()
