"""AsyncDelivery with a stand-in librdkafka handle: reports settle on the loop, a fatal
producer error swaps in a new producer, the old one's last reports still settle."""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from fhirbus.kafka.producer import DeliveryError
from fhirbus.producers.mllp.delivery import AsyncDelivery
from fhirbus.producers.mllp.intake import Record

RECORD = Record("hl7.raw.v1", b"feed", b"MSH|1", [])


class FakeRaw:
    """produce() keeps the callback; the test says what the next poll() reports."""

    def __init__(self) -> None:
        self.pending: list[Any] = []
        self.lock = threading.Lock()
        self.commands: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.fatal = False

    def produce(self, topic: str, value: bytes, key: bytes, **kw: Any) -> None:
        if self.fatal:
            raise KafkaException(KafkaError(KafkaError._FATAL))
        with self.lock:
            self.pending.append(kw["on_delivery"])

    def poll(self, timeout: float) -> int:
        try:
            command = self.commands.get(timeout=timeout)
        except queue.Empty:
            return 0
        if isinstance(command, BaseException):
            raise command
        return self._report(command)

    def _report(self, err: KafkaError | None) -> int:
        with self.lock:
            callbacks, self.pending = self.pending, []
        for callback in callbacks:
            callback(err, None)
        return len(callbacks)


class FakeProducer:
    def __init__(self) -> None:
        self.raw = FakeRaw()
        self.closed = threading.Event()

    def close(self, timeout: float = 30.0) -> int:
        # A flush on the closing thread: what is left reports as failed.
        self.raw._report(KafkaError(KafkaError._PURGE_QUEUE))
        self.closed.set()
        return 0


async def until(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def test_reports_from_the_poll_thread_settle_on_the_loop() -> None:
    async def run() -> None:
        producer = FakeProducer()
        delivery = AsyncDelivery(producer)  # type: ignore[arg-type]
        delivery.start()
        try:
            sends = [asyncio.create_task(delivery.publish(RECORD)) for _ in range(5)]
            await until(lambda: len(producer.raw.pending) == 5)
            producer.raw.commands.put(None)  # one poll reports all five
            await asyncio.gather(*sends)
            failing = asyncio.create_task(delivery.publish(RECORD))
            await until(lambda: len(producer.raw.pending) == 1)
            producer.raw.commands.put(KafkaError(KafkaError._MSG_TIMED_OUT))
            with pytest.raises(DeliveryError):
                await failing
        finally:
            await delivery.stop()

    asyncio.run(run())


def test_a_fatal_error_swaps_the_producer_and_settles_the_old_ones_reports() -> None:
    async def run() -> None:
        old, new = FakeProducer(), FakeProducer()
        made: list[FakeProducer] = []

        def recreate() -> FakeProducer:
            made.append(new)
            return new

        replaced: list[int] = []
        delivery = AsyncDelivery(
            old,  # type: ignore[arg-type]
            recreate=recreate,  # type: ignore[arg-type]
            on_recreate=lambda: replaced.append(1),
        )
        delivery.start()
        try:
            in_flight = asyncio.create_task(delivery.publish(RECORD))
            await until(lambda: len(old.raw.pending) == 1)
            old.raw.fatal = True
            fatal = KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, fatal=True)
            old.raw.commands.put(KafkaException(fatal))
            # The in-flight record reports as failed when the old producer is closed.
            with pytest.raises(DeliveryError):
                await in_flight
            await until(old.closed.is_set)  # closed on a thread of its own
            assert made == [new] and replaced == [1]
            assert delivery.producer is new
            after = asyncio.create_task(delivery.publish(RECORD))
            await until(lambda: len(new.raw.pending) == 1)
            new.raw.commands.put(None)
            await after
        finally:
            await delivery.stop()

    asyncio.run(run())


def test_a_produce_refused_as_fatal_also_swaps_the_producer() -> None:
    async def run() -> None:
        old, new = FakeProducer(), FakeProducer()
        delivery = AsyncDelivery(old, recreate=lambda: new)  # type: ignore[arg-type, return-value]
        delivery.start()
        try:
            old.raw.fatal = True
            with pytest.raises(DeliveryError):
                await delivery.publish(RECORD)
            await until(lambda: delivery.producer is new)
        finally:
            await delivery.stop()

    asyncio.run(run())


def test_listener_linger_is_zero_unless_the_operator_tunes_it() -> None:
    from fhirbus.producers.mllp.app import listener_producer_config
    from fhirbus.settings import Settings

    base = Settings(kafka_bootstrap="localhost:9092")
    conf = listener_producer_config(base)
    assert conf["linger.ms"] == 0 and conf["acks"] == "all" and conf["enable.idempotence"]
    assert conf["delivery.timeout.ms"] == conf["request.timeout.ms"] == 2000
    tuned = listener_producer_config(
        base.model_copy(update={"kafka_extra": {"linger.ms": "2"}})
    )
    assert tuned["linger.ms"] == "2" and tuned["delivery.timeout.ms"] == 2000
