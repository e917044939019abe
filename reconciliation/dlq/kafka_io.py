"""Kafka at the edge of the toolset: read a DLQ topic, send replays, delete records.

Reading never joins a consumer group and never commits: partitions are assigned by hand and
read from the low to the high watermark taken when the scan starts, so listing is a pure
read that cannot move any stage's position or trigger a rebalance.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from fhirbus.kafka.config import client_config, producer_config
from fhirbus.kafka.producer import DeliveryError, Producer
from fhirbus.settings import Settings

from .records import DeadLetter, Headers


class DlqIoError(RuntimeError):
    """A Kafka step of a DLQ action failed; the message says which and what to do."""


def scan(settings: Settings, topic: str, timeout_s: float = 60.0) -> Iterator[DeadLetter]:
    """Every record of ``topic`` up to the high watermark at the start, partition order."""
    conf = client_config(settings)
    conf.update({
        # librdkafka wants a group id even for assign(); it is never joined or committed.
        "group.id": f"fhirbus-dlq-reader-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
    })
    consumer = Consumer(conf)
    try:
        yield from _read(consumer, topic, timeout_s)
    finally:
        consumer.close()


def _read(consumer: Consumer, topic: str, timeout_s: float) -> Iterator[DeadLetter]:
    meta = consumer.list_topics(topic, timeout=15).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise DlqIoError(f"topic {topic} does not exist on the cluster: check the name "
                         "(`fhirbus topics list` shows the dlq.<stage>.v1 topics)")
    ends: dict[int, int] = {}
    starts = []
    for p in sorted(meta.partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
        if high > low:
            ends[p] = high
            starts.append(TopicPartition(topic, p, low))
    if not starts:
        return
    consumer.assign(starts)
    deadline = time.monotonic() + timeout_s
    while ends:
        if time.monotonic() > deadline:
            raise DlqIoError(f"reading {topic} timed out before the end of partitions "
                             f"{sorted(ends)}: is the cluster reachable? try again")
        for msg in consumer.consume(500, 0.5):
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise DlqIoError(f"reading {topic}: {msg.error().str()}")
            end = ends.get(msg.partition())
            if end is None:
                continue
            yield _dead_letter(topic, msg)
            if msg.offset() >= end - 1:
                del ends[msg.partition()]
        _drop_finished(consumer, topic, ends)


def _drop_finished(consumer: Consumer, topic: str, ends: dict[int, int]) -> None:
    """A partition whose last offsets hold no readable record (a transaction marker, a
    compacted gap) is done when the consumer's position has passed the end."""
    if not ends:
        return
    for tp in consumer.position([TopicPartition(topic, p) for p in ends]):
        if tp.offset >= 0 and tp.offset >= ends[tp.partition]:
            del ends[tp.partition]


def _dead_letter(topic: str, msg: Message) -> DeadLetter:
    _kind, stamp = msg.timestamp()
    return DeadLetter(topic, msg.partition(), msg.offset(), stamp, msg.key(), msg.value(),
                      list(msg.headers() or []))


@dataclass(frozen=True)
class Sent:
    record: DeadLetter
    topic: str
    partition: int
    offset: int


def send(
    settings: Settings, items: Sequence[tuple[DeadLetter, str, Headers]], timeout_s: float = 60.0
) -> list[Sent]:
    """Produce every (record, target topic, headers); return only when all are confirmed,
    else raise (nothing is audited then, so the next run sends them again)."""
    # A value restored from a claim check may exceed librdkafka's 1 MB default; the broker's
    # own limit still applies, and its refusal fails the replay below.
    largest = max((len(record.value or b"") for record, _, _ in items), default=0)
    producer = Producer(
        producer_config(settings, **{"message.max.bytes": max(1_000_000, largest + 65536)})
    )
    try:
        futures: list[tuple[DeadLetter, Future[Message]]] = [
            (record, producer.send(target, record.value, record.key, headers))
            for record, target, headers in items
        ]
        producer.flush(timeout_s)
        sent = []
        for record, future in futures:
            try:
                msg = future.result(timeout=max(1.0, timeout_s))
            except DeliveryError as exc:
                raise DlqIoError(f"replay of {record.id} was not confirmed ({exc}); nothing "
                                 "was recorded as replayed: run the replay again") from exc
            sent.append(Sent(record, msg.topic(), msg.partition(), msg.offset()))
        return sent
    finally:
        producer.close()


def delete_before(settings: Settings, topic: str, cutoffs: dict[int, int]) -> str | None:
    """Kafka's DeleteRecords up to (excluding) each partition's cutoff offset. Returns None on
    success, else why the broker refused (e.g. the embedded mock broker lacks the API)."""
    admin = AdminClient(client_config(settings))
    request = [TopicPartition(topic, p, o) for p, o in sorted(cutoffs.items())]
    try:
        futures = admin.delete_records(request, request_timeout=30)
        for future in futures.values():
            future.result()
    except KafkaException as exc:
        err = exc.args[0]
        return err.str() if isinstance(err, KafkaError) else str(err)
    return None
