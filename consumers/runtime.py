"""The one poll loop every fhirbus consumer runs on.

poll a batch -> decode -> handle (plain function: record -> effects) -> dead-letter what
fails permanently -> sink applies effects with positions -> commit offsets. Offsets move
only after the effect (or the dead-letter write) is confirmed, so a crash anywhere means
redelivery, and idempotent effects make redelivery harmless.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from time import time_ns
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from fhirbus import telemetry
from fhirbus.kafka.config import consumer_config, producer_config
from fhirbus.kafka.producer import Producer
from fhirbus.schemas.topics import dead_letter_topic
from fhirbus.settings import RuntimeSettings, Settings

from .backoff import backoff_ms
from .deadletter import dead_letter
from .errors import DeserializationError, ErrorClass, classify
from .metrics import RuntimeMetrics
from .records import Publish, Record
from .sinks import KafkaSink, Sink, confirm, send_in_trace
from .spans import RecordSpans

log = logging.getLogger(__name__)

Handler = Callable[[Record], Iterable[Any] | None]
Decoder = Callable[[bytes | None, str], Any]


@dataclass
class ConsumerSpec:
    """What a consumer is: its stage name (for the dead-letter topic), group, topics, code."""

    stage: str
    group_id: str
    topics: Sequence[str]
    handler: Handler
    decode: Decoder | None = None
    dead_letter_topic: str | None = None
    consumer_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def dlq_topic(self) -> str:
        return self.dead_letter_topic or dead_letter_topic(self.stage)


class _Stop(Exception):
    """Shutdown was requested while waiting; unwind without storing the current record."""


class ConsumerRuntime:
    def __init__(
        self,
        spec: ConsumerSpec,
        settings: Settings,
        sink: Sink | None = None,
        producer: Producer | None = None,
    ) -> None:
        self.spec = spec
        self.rt: RuntimeSettings = settings.runtime
        self.metrics = RuntimeMetrics(spec.group_id)
        self._owns_producer = producer is None
        # Every send here is confirmed by a flush() on this thread, which serves the delivery
        # reports; a polling thread would only contend with it for the GIL.
        self.producer = producer or Producer(producer_config(settings), background_poll=False)
        self.sink = sink or KafkaSink(self.producer)
        conf = consumer_config(settings, spec.group_id, **spec.consumer_overrides)
        conf.setdefault("statistics.interval.ms", 5_000)
        # An outage pause sleeps between probes without polling; allow it a long leash.
        conf.setdefault("max.poll.interval.ms", 900_000)
        conf["stats_cb"] = self.metrics.on_stats
        self.consumer = Consumer(conf)
        self._stop = threading.Event()
        self._stopping = False
        self._decode, self._handler = spec.decode, spec.handler
        self._revoked: set[tuple[str, int]] = set()
        self._assigned: set[tuple[str, int]] = set()
        self._spans = RecordSpans(telemetry.tracer("fhirbus.consumers"))

    # -- lifecycle ---------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping = True  # read per record: a plain attribute is cheaper than an Event
        self._stop.set()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def run(self, max_records: int | None = None, idle_exit_s: float | None = None) -> int:
        """Consume until stopped (or, for tools and tests, a record budget / idle time)."""
        _freeze_startup_heap()
        self.consumer.subscribe(
            list(self.spec.topics), on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        done, idle_since = 0, time.monotonic()
        try:
            while not self._stop.is_set():
                n = self._run_batch()
                done += n
                # Idle time counts only while partitions are assigned: a group still waiting
                # for a dead member's session to expire is not idle, it is blocked.
                idle_since = time.monotonic() if n or not self._assigned else idle_since
                if max_records is not None and done >= max_records:
                    break
                if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                    break
        finally:
            self._close()
        return done

    def _close(self) -> None:
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("final commit failed", extra={"error": exc.args[0].name()})
        self.consumer.close()
        if self._owns_producer:
            self.producer.close(30)  # flushes, and stops its poll thread
        else:
            self.producer.flush(30)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(p.topic, p.partition) for p in partitions]
        self._revoked.difference_update(keys)
        self._assigned.update(keys)
        stored = self.sink.stored_positions(keys)
        for p in partitions:
            if (p.topic, p.partition) in stored:
                p.offset = stored[(p.topic, p.partition)]
        consumer.incremental_assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._revoked.update((p.topic, p.partition) for p in partitions)
        self._assigned.difference_update((p.topic, p.partition) for p in partitions)
        # Nothing stored yet is fine: the next owner starts from the last commit.
        with contextlib.suppress(KafkaException):
            consumer.commit(asynchronous=False)
        consumer.incremental_unassign(partitions)

    # -- one batch -----------------------------------------------------------------------
    def _run_batch(self) -> int:
        # Block only for the first record, then gather a batch for at most a few ms:
        # consume(n, poll_timeout) would wait for a full batch and add up to the poll
        # timeout to every record's latency when traffic is light.
        first = self.consumer.poll(self.rt.poll_timeout_s)
        if first is None:
            return 0
        messages = [first, *self.consumer.consume(self.rt.batch_size - 1, self.rt.batch_linger_s)]
        started = time.perf_counter()
        outcomes: list[Record] = []
        dead: list[Publish] = []
        processed: list[Message] = []  # handled (applied or dead-lettered), in order
        self._handle(messages, outcomes, dead, processed)
        self.metrics.record_batch(len(processed), time.perf_counter() - started)
        positions = _positions(processed)
        self._apply(outcomes, dead, positions)
        self._commit(positions)
        return len(processed)

    def _handle(
        self,
        messages: list[Message],
        outcomes: list[Record],
        dead: list[Publish],
        processed: list[Message],
    ) -> None:
        """The per-record hot path: decode and handler inline, per-record bookkeeping kept
        to a few attribute stores (spans: see spans.py; metrics and positions: per batch).
        Failures leave it for _retry, which classifies them."""
        decode, handler, revoked, spans = self._decode, self._handler, self._revoked, self._spans
        # Locals, not attribute or global lookups, for what runs per record.
        add_outcome, add_processed = outcomes.append, processed.append
        new, record_cls = _new, Record
        token = spans.start_batch()
        stamps = spans.stamps
        try:
            for msg in messages:
                if self._stopping:
                    break
                if msg.error() is not None:
                    spans.msg = None
                    self._on_error(msg)
                    continue
                if revoked and (msg.topic(), msg.partition()) in revoked:
                    continue  # handed to another member mid-batch; it will redo this record
                spans.msg = msg
                if stamps is not None:
                    stamps.append(time_ns())
                # Record(msg, raw) without the __init__ call: ~50 of the loop's ~500 ns.
                record = new(record_cls)
                record._msg = msg
                record.value = raw = msg.value()
                try:
                    if decode is not None:
                        try:
                            record.value = decode(raw, msg.topic())
                        except Exception as exc:
                            raise _decode_error(exc) from exc
                    effects = handler(record)
                    record.effects = () if effects is None else tuple(effects)
                    add_outcome(record)
                except Exception as exc:  # classified in _retry; nothing is swallowed
                    result = self._retry(record, exc)
                    if result.__class__ is Publish:
                        dead.append(result)  # type: ignore[arg-type]
                    else:
                        add_outcome(result)  # type: ignore[arg-type]
                if spans.span is not None:
                    spans.record_done()
                add_processed(msg)
        except _Stop:
            pass
        finally:
            spans.end_batch(token, processed)

    def _on_error(self, msg: Message) -> None:
        err = msg.error()
        if err.fatal():
            raise KafkaException(err)
        if err.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error", extra={"error": err.name()})

    def _retry(self, record: Record, exc: Exception) -> Record | Publish:
        attempts, first_failed = 1, datetime.now(UTC)
        while True:
            self.metrics.add("failed")
            cls = classify(exc)
            give_up = cls is ErrorClass.PERMANENT or (
                cls is ErrorClass.TRANSIENT and attempts >= self.rt.max_attempts
            )
            if give_up:
                return self._dead_letter(record, exc, cls, attempts, first_failed)
            self.metrics.add("retried")
            self._wait(attempts, self.rt.outage_probe_max_ms if cls is ErrorClass.OUTAGE else None)
            attempts += 1
            try:
                if self._decode is not None:
                    try:
                        record.value = self._decode(record.raw, record.topic)
                    except Exception as decode_exc:
                        raise _decode_error(decode_exc) from decode_exc
                record.effects = tuple(self._handler(record) or ())
                return record
            except Exception as again:
                exc = again

    def _dead_letter(
        self,
        record: Record,
        exc: BaseException,
        cls: ErrorClass,
        attempts: int,
        first_failed: datetime,
    ) -> Publish:
        label = "exhausted" if cls is ErrorClass.TRANSIENT else str(cls)
        if isinstance(exc, DeserializationError):
            label = "deserialization"
        self.metrics.add("dead_lettered")
        # The record's consumer span (if it is traced) shows it failed, and why in class.
        trace.get_current_span().set_status(StatusCode.ERROR, label)
        log.warning(
            "record dead-lettered",
            extra={
                "stage": self.spec.stage,
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "error_class": label,
                "error_type": type(exc).__name__,
                "attempts": attempts,
            },
        )
        return dead_letter(
            record,
            topic=self.spec.dlq_topic,
            stage=self.spec.stage,
            group=self.spec.group_id,
            error=exc,
            error_class=label,
            attempts=attempts,
            first_failed_at=first_failed,
            trace_id=telemetry.current_trace_id(),
        )

    def _apply(
        self, outcomes: list[Record], dead: list[Publish], positions: dict[tuple[str, int], int]
    ) -> None:
        """Dead letters first, then the sink: once positions are stored, both must be durable."""
        attempts = 0
        while True:
            attempts += 1
            try:
                # A dead letter keeps its original's headers: sent in the original's trace.
                futures = [f for d in dead for f in send_in_trace(self.producer, [d], d.headers)]
                confirm(self.producer, futures, 60.0)
                dead = []  # confirmed; a retry below must not write them twice
                self.sink.apply(outcomes, positions)
                return
            except Exception as exc:
                cls = classify(exc)
                log.warning(
                    "batch apply failed",
                    extra={"error_class": str(cls), "error_type": type(exc).__name__},
                )
                if cls is ErrorClass.PERMANENT and not dead:
                    self._isolate(outcomes, positions)
                    return
                self._wait(attempts, self.rt.outage_probe_max_ms, interruptible=False)

    def _isolate(self, outcomes: list[Record], positions: dict[tuple[str, int], int]) -> None:
        """A batch the sink rejects for good: apply record by record so only the poison
        record is dead-lettered, instead of crash-looping on the whole batch."""
        for rec in outcomes:
            try:
                self.sink.apply([rec], {(rec.topic, rec.partition): rec.offset + 1})
            except Exception as exc:
                if classify(exc) is not ErrorClass.PERMANENT:
                    raise
                d = self._dead_letter(rec, exc, ErrorClass.PERMANENT, 1, datetime.now(UTC))
                confirm(self.producer, send_in_trace(self.producer, [d], d.headers), 60)
        self.sink.apply([], positions)

    def _commit(self, positions: dict[tuple[str, int], int]) -> None:
        if not positions:
            return
        self.consumer.store_offsets(offsets=[
            TopicPartition(t, p, o) for (t, p), o in positions.items()
        ])
        try:
            self.consumer.commit(asynchronous=True)
        except KafkaException as exc:
            log.warning("offset commit failed", extra={"error": exc.args[0].name()})

    def _wait(self, attempt: int, cap_ms: int | None, interruptible: bool = True) -> None:
        delay = backoff_ms(attempt, self.rt.backoff_initial_ms, cap_ms or self.rt.backoff_max_ms)
        deadline = time.monotonic() + delay / 1000
        while time.monotonic() < deadline:
            if interruptible and self._stop.is_set():
                raise _Stop()
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


_heap_frozen = False


def _freeze_startup_heap() -> None:
    """Once per process, before the first batch: move what is alive now (modules, schemas,
    settings, clients: all of it lives as long as the process) out of the cyclic collector.

    A batch's Records (and decoded values) live until the batch is applied, so the young
    generations keep promoting them, and every few hundred ms a full collection walked the
    whole startup heap again: 2-3 per 100k records, 35-60 ms, 10-20% of the runtime's time
    in the throughput bench, and more in bigger processes. Refcounting still frees frozen
    objects; only cyclic garbage that exists right now would never be collected, so it is
    collected first."""
    global _heap_frozen
    if not _heap_frozen:
        _heap_frozen = True
        gc.collect()
        gc.freeze()


_new = object.__new__
# Unbound C methods: 3x faster than methodcaller. Messages come from confluent's Consumer.
_PARTITION, _TOPIC = Message.partition, Message.topic


def _positions(processed: list[Message]) -> dict[tuple[str, int], int]:
    """The next offset to read per partition: one past its last handled record.

    A batch holds runs of one partition's records (in offset order); grouping runs in C
    costs ~40% less than a (topic, partition) key per record. A partition's later run
    overwrites its earlier one."""
    out: dict[tuple[str, int], int] = {}
    for partition, run in groupby(processed, _PARTITION):
        for topic, same in groupby(run, _TOPIC):
            out[(topic, partition)] = deque(same, maxlen=1)[0].offset() + 1
    return out


def _decode_error(exc: Exception) -> Exception:
    # A registry or network failure while decoding is not the record's fault: keep its class.
    if classify(exc) is not ErrorClass.PERMANENT:
        return exc
    return DeserializationError(f"cannot decode record: {type(exc).__name__}")
