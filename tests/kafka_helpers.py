"""Reading topics back in tests: a plain confluent-kafka consumer, assigned to every
partition from the beginning, independent of the code under test."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, Message, TopicPartition


def read_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> list[Message]:
    """Every record of ``topic`` until ``expected`` arrived or ``timeout_s`` passed."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
        out: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.2):
                if msg.error() is None:
                    out.append(msg)
        # Give stragglers (duplicates, the unexpected) a moment to show up too.
        for msg in consumer.consume(1000, 0.5):
            if msg.error() is None:
                out.append(msg)
        return out
    finally:
        consumer.close()


def headers_of(msg: Message) -> dict[str, str]:
    return {k: (v or b"").decode() for k, v in (msg.headers() or [])}
