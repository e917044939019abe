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

A fatal producer error (an idempotent producer that lost sequence sync with the broker,
say) makes every later produce fail, so without a new producer the listener would spool
everything from then on and the forwarder could never drain it. With a ``recreate``
factory the poll thread swaps in a new producer as soon as it sees one; the old one is
flushed and destroyed on a thread of its own, its remaining reports (failures: those
messages are spooled, so a duplicate is possible, never a loss) settled as usual.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message

from fhirbus.kafka.producer import DeliveryError, Producer

from .intake import Record

log = logging.getLogger(__name__)

# How long one poll call blocks when no report arrives: bounds how late stop() is seen.
_POLL_S = 0.1
# Local queue full: wait this long for reports to make room, then produce again.
_QUEUE_FULL_S = 0.001
# A replaced producer gets this long to report its last records before it is destroyed;
# above any broker confirm timeout (its delivery.timeout.ms), so every record reports.
_RETIRE_S = 30.0
Report = tuple[asyncio.Future[None], KafkaError | None]


def is_fatal(error: KafkaError) -> bool:
    """The producer is unusable: librdkafka's fatal error, or a produce refused for it."""
    return bool(error.fatal()) or error.code() == KafkaError._FATAL


class AsyncDelivery:
    def __init__(
        self,
        producer: Producer,
        *,
        recreate: Callable[[], Producer] | None = None,
        on_recreate: Callable[[], None] | None = None,
    ) -> None:
        self._producer = producer
        self._raw = producer.raw
        self._recreate = recreate
        self._on_recreate = on_recreate
        self._fatal = False  # set from any thread; the poll thread acts on it
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._poll_ident: int | None = None
        self._stop = threading.Event()
        self._reports: collections.deque[Report] = collections.deque()
        # True from a wake-up being scheduled until the loop starts draining: the poll
        # thread schedules another only after that, so none is lost and few are made.
        self._wake_pending = False

    @property
    def producer(self) -> Producer:
        """The producer in use now (a fatal error replaces it)."""
        return self._producer

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
        # From now on every report wakes the loop itself (a later thread may even reuse the
        # poll thread's id).
        self._poll_ident = None
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
                if is_fatal(exc.args[0]):
                    self._fatal = True
                raise DeliveryError(exc.args[0]) from None
        await future

    def _callback(self, future: asyncio.Future[None]) -> Any:
        reports = self._reports

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            reports.append((future, err))
            if err is not None and err.fatal():
                self._fatal = True
            if threading.get_ident() != self._poll_ident:
                # Served by someone else's poll or flush (the producer's close at
                # shutdown): nobody else will wake the loop for this one.
                self._wake()

        return on_delivery

    def _run(self) -> None:
        self._poll_ident = threading.get_ident()
        reports, stop = self._reports, self._stop
        while not stop.is_set():
            try:
                self._raw.poll(_POLL_S)
            except KafkaException as exc:
                # librdkafka raises its fatal error from poll once, when it happens.
                if is_fatal(exc.args[0]):
                    self._fatal = True
                else:
                    log.exception("producer poll failed")
            except Exception:
                # Keep polling: a report never served would leave its sender without an ACK.
                log.exception("producer poll failed")
            if self._fatal:
                self._replace()
            if reports and not self._wake_pending:
                self._wake()

    def _replace(self) -> None:
        """On the poll thread: a new producer for a fatally failed one."""
        self._fatal = False
        if self._recreate is None:
            log.error("producer hit a fatal error and cannot be replaced; restart the listener")
            return
        old = self._producer
        try:
            new = self._recreate()
        except Exception:
            log.exception("could not create a new producer; trying again")
            self._fatal = True
            self._stop.wait(1.0)
            return
        self._producer, self._raw = new, new.raw
        log.error("producer hit a fatal error; replaced by a new one")
        if self._on_recreate is not None:
            self._on_recreate()
        threading.Thread(
            target=_retire, args=(old,), name="mllp-producer-retire", daemon=True
        ).start()

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


def _retire(producer: Producer) -> None:
    """Flush (its reports come in as failures, settled on the loop) and destroy."""
    try:
        left = producer.close(_RETIRE_S)
    except Exception:
        log.warning("closing a replaced producer failed", exc_info=True)
        return
    if left:
        log.error("replaced producer closed with records unreported", extra={"records": left})
