"""What ops ask Kafka about: records per topic, dead-letter depth, a group's committed lag.

One short-lived consumer that never subscribes (so it never joins or disturbs a group), with
short timeouts: a status screen must answer quickly even when the broker does not.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from fhirbus.schemas.topics import REJECTED_HL7
from fhirbus.settings import Settings

TIMEOUT_S = 5.0


def is_dead_letter(topic: str) -> bool:
    return topic.startswith("dlq.") or topic == REJECTED_HL7


def ensure_topics(settings: Settings, topics: list[str]) -> None:
    """Have the embedded broker create ``topics`` now (a producer's metadata request
    auto-creates them), so a consumer subscribing before the first record sees them at
    once instead of at its next metadata refresh, minutes later."""
    from confluent_kafka import Producer

    from fhirbus.kafka.config import client_config

    if not topics:
        return
    producer = Producer(client_config(settings))
    for topic in topics:
        producer.list_topics(topic=topic, timeout=TIMEOUT_S)
    producer.flush(0)


class KafkaView:
    def __init__(self, settings: Settings) -> None:
        from fhirbus.kafka.config import client_config

        self.conf = {**client_config(settings), "enable.auto.commit": False}
        self.consumer = Consumer({**self.conf, "group.id": "fhirbus-status"})
        self._partitions: dict[str, list[int]] = {}

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> KafkaView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def topics(self) -> dict[str, list[int]]:
        meta = self.consumer.list_topics(timeout=TIMEOUT_S)
        self._partitions = {name: sorted(t.partitions) for name, t in meta.topics.items()
                            if not name.startswith("__")}
        return self._partitions

    def watermarks(self, topic: str) -> dict[int, tuple[int, int]]:
        parts = self._partitions.get(topic)
        if parts is None:
            parts = self.topics().get(topic, [])
        return {p: self.consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                       timeout=TIMEOUT_S) for p in parts}

    def count(self, topic: str) -> int:
        """Records currently held (high minus low watermark, over every partition)."""
        return sum(max(0, high - low) for low, high in self.watermarks(topic).values())

    def counts(self, prefix: str = "") -> dict[str, int]:
        return {t: self.count(t) for t in sorted(self.topics()) if t.startswith(prefix)}

    def dead_letter_depth(self) -> dict[str, int]:
        return {t: self.count(t) for t in sorted(self.topics()) if is_dead_letter(t)}

    def committed_lag(self, group: str, topics: Iterable[str]) -> dict[str, Any]:
        """Lag of ``group`` from its committed offsets; a partition with none counts whole."""
        marks = {(t, p): m for t in topics for p, m in self.watermarks(t).items()}
        if not marks:
            return {"lag": 0, "partitions": 0, "source": "committed offsets"}
        probe = Consumer({**self.conf, "group.id": group})
        try:
            tps = probe.committed([TopicPartition(t, p) for t, p in marks], timeout=TIMEOUT_S)
        except KafkaException as exc:
            return {"error": f"cannot read committed offsets of {group}: {exc}"}
        finally:
            probe.close()
        lag = 0
        for tp in tps:
            low, high = marks[(tp.topic, tp.partition)]
            lag += high - (tp.offset if tp.offset >= 0 else low)
        return {"lag": lag, "partitions": len(marks), "source": "committed offsets"}
