"""Delivery reports as asyncio futures, served on the event loop thread.

``Producer.send`` resolves a concurrent Future from whichever thread polls; awaiting it
costs a cross-thread wakeup per message (``call_soon_threadsafe`` through the loop's
self-pipe, plus a GIL handoff to the polling thread). At thousands of ACKs per second that
was about a third of the listener's CPU, so here the loop itself polls the producer while
records are in flight and the callbacks resolve asyncio futures directly. Same durability
contract: a future resolves only on the broker's delivery report, and failures raise
``DeliveryError`` with its retriable flag.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message

from fhirbus.kafka.producer import DeliveryError, Producer

from .intake import Record

# While records are in flight the loop polls at this interval; epoll rounds it up to 1 ms.
_BUSY_POLL_S = 0.0005


class AsyncDelivery:
    def __init__(self, producer: Producer) -> None:
        self._raw = producer.raw
        self._in_flight = 0
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._pump: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start polling from the running loop (call on the loop thread)."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._wakeup = asyncio.Event()
        self._pump = asyncio.create_task(self._run(), name="mllp-delivery-pump")

    async def stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None

    async def publish(self, record: Record) -> None:
        """Produce one record; returns when the broker confirmed it, raises DeliveryError."""
        assert self._loop is not None and self._wakeup is not None, "start() first"
        future: asyncio.Future[None] = self._loop.create_future()
        callback = self._callback(future)
        while True:
            try:
                self._raw.produce(
                    record.topic,
                    record.value,
                    record.key,
                    headers=record.headers,
                    on_delivery=callback,
                )
                break
            except BufferError:
                # Local queue full: serve reports to make room (backpressure), then retry.
                self._raw.poll(0)
                await asyncio.sleep(_BUSY_POLL_S)
            except KafkaException as exc:
                raise DeliveryError(exc.args[0]) from None
        self._in_flight += 1
        self._wakeup.set()
        await future

    def _callback(self, future: asyncio.Future[None]) -> Any:
        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            self._in_flight -= 1
            if threading.get_ident() == self._thread:
                _settle(future, err)
            elif self._loop is not None and not self._loop.is_closed():
                # A flush from another thread at shutdown: hand the result to the loop.
                self._loop.call_soon_threadsafe(_settle, future, err)

        return on_delivery

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            if self._in_flight <= 0:
                self._wakeup.clear()
                await self._wakeup.wait()
            self._raw.poll(0)
            await asyncio.sleep(_BUSY_POLL_S)


def _settle(future: asyncio.Future[None], err: KafkaError | None) -> None:
    if future.done():
        return
    if err is None:
        future.set_result(None)
    else:
        future.set_exception(DeliveryError(err))
