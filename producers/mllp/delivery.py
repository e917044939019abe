"""Delivery reports as asyncio futures: a poll thread waits, the event loop settles.

An ACK waits for the broker's delivery report, so how soon a report reaches the loop is
on every message's latency, and with closed-loop senders (send, wait for the ACK, send
the next) latency caps throughput: 8 senders at 2 ms each can never exceed 4,000 msg/s.
Two choices follow from that:

* ``linger.ms`` is 0 (see ``app.listener_producer_config``): librdkafka's broker thread
  waits in poll() with millisecond granularity, so any linger above 0 held each record
  for about 1.1 ms; at 0 the embedded broker confirms in about 50 us. Under load records
  still batch, behind the requests in flight.
* A thread blocks in ``producer.poll`` and is woken by librdkafka the moment a report
  arrives. The event loop polling on a timer could not do that: epoll rounds a 0.5 ms
  timer up to 1 ms, which added a millisecond to every ACK.

The thread never touches asyncio futures. The delivery callbacks it runs only append to
a deque, and it wakes the loop (``call_soon_threadsafe``, one self-pipe write) only when
no wake-up is already pending: under load one wake-up carries many reports, where one per
report once cost about a third of the listener's CPU. Same durability contract as
before: a future resolves only on the broker's delivery report, and failures raise
``DeliveryError`` with its retriable flag.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message

from fhirbus.kafka.producer import DeliveryError, Producer

from .intake import Record

log = logging.getLogger(__name__)

# How long one poll call blocks when no report arrives: bounds how late stop() is seen.
_POLL_S = 0.1
# Local queue full: wait this long for reports to make room, then produce again.
_QUEUE_FULL_S = 0.001
Report = tuple[asyncio.Future[None], KafkaError | None]


class AsyncDelivery:
    def __init__(self, producer: Producer) -> None:
        self._raw = producer.raw
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._poll_ident: int | None = None
        self._stop = threading.Event()
        self._reports: collections.deque[Report] = collections.deque()
        # True from a wake-up being scheduled until the loop starts draining: the poll
        # thread schedules another only after that, so none is lost and few are made.
        self._wake_pending = False

    def start(self) -> None:
        """Start the poll thread; settle reports on the running loop (call on its thread)."""
        self._loop = asyncio.get_running_loop()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="mllp-delivery", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, thread.join)
        self._drain()

    async def publish(self, record: Record) -> None:
        """Produce one record; returns when the broker confirmed it, raises DeliveryError."""
        loop = self._loop
        assert loop is not None, "start() first"
        future = loop.create_future()
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
                # Local queue full: the poll thread serves reports and makes room.
                await asyncio.sleep(_QUEUE_FULL_S)
            except KafkaException as exc:
                raise DeliveryError(exc.args[0]) from None
        await future

    def _callback(self, future: asyncio.Future[None]) -> Any:
        reports = self._reports

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            reports.append((future, err))
            if threading.get_ident() != self._poll_ident:
                # Served by someone else's poll or flush (the producer's close at
                # shutdown): nobody else will wake the loop for this one.
                self._wake()

        return on_delivery

    def _run(self) -> None:
        self._poll_ident = threading.get_ident()
        poll, reports, stop = self._raw.poll, self._reports, self._stop
        while not stop.is_set():
            try:
                poll(_POLL_S)
            except Exception:
                # Keep polling: a report never served would leave its sender without an ACK.
                log.exception("producer poll failed")
            if reports and not self._wake_pending:
                self._wake()

    def _wake(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        self._wake_pending = True
        try:
            loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop closed meanwhile
            self._wake_pending = False

    def _drain(self) -> None:
        """On the loop: settle every report that has arrived."""
        # Cleared before draining: a report appended from now on either is drained below
        # or finds the flag clear and schedules another wake-up.
        self._wake_pending = False
        reports = self._reports
        while reports:
            future, err = reports.popleft()
            if future.done():
                continue
            if err is None:
                future.set_result(None)
            else:
                future.set_exception(DeliveryError(err))
