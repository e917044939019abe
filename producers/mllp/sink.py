"""Publish-or-spool: the state machine that decides where a record becomes durable.

States (per listener):

* DIRECT (spool empty): publish to Kafka and wait for the delivery report. If the broker
  does not confirm within ``broker_confirm_timeout_s`` (set as the producer's own delivery
  timeout), the record is spooled instead, which moves the listener to SPOOLING.
* SPOOLING (spool not empty): every new record goes to the spool, behind the older ones, so
  a feed's arrival order is kept; publishing straight to Kafka now would overtake them. The
  forwarder drains the spool in order and reports each deleted row; at zero the listener is
  back to DIRECT.

``backlog`` counts rows committed or being committed to the spool and not yet forwarded; it
is only touched on the event loop thread, so the check-then-route step cannot race.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future
from enum import Enum

from fhirbus.kafka.producer import DeliveryError

from .delivery import AsyncDelivery
from .intake import Record
from .spool import Spool, SpoolError
from .tickets import Ticket

log = logging.getLogger(__name__)
_SEEN_BATCH_S = 0.005


class Stored(Enum):
    BROKER = "broker"
    SPOOL = "spool"


class StoreFailed(Exception):
    """Neither the broker nor the spool took the record: the sender must keep it."""


class DurableSink:
    def __init__(self, delivery: AsyncDelivery, spool: Spool, *, backlog: int = 0) -> None:
        self._delivery = delivery
        self._spool = spool
        self.backlog = backlog
        self.spooled_wakeup = asyncio.Event()
        self._seen_batch: list[str] = []
        self._seen_flush: asyncio.TimerHandle | None = None
        if backlog:
            self.spooled_wakeup.set()

    @property
    def spooling(self) -> bool:
        return self.backlog > 0

    async def store(self, record: Record, kind: str, seen_key: str | None = None) -> Stored:
        if self.backlog > 0:
            return await self._to_spool(record, kind, seen_key)
        try:
            # The delivery directly, not self.publish: one coroutine frame fewer to resume
            # for every message.
            await self._delivery.publish(record)
        except DeliveryError as exc:
            log.warning(
                "broker did not confirm; spooling",
                extra={"topic": record.topic, "error": _describe(exc)},
            )
            return await self._to_spool(record, kind, seen_key)
        if seen_key is not None:
            self._remember(seen_key)
        return Stored.BROKER

    async def store_routed(self, record: Record, kind: str, ticket: Ticket) -> Stored:
        """With workers: where to store was decided with the claim (claims.py).

        A spool grant goes straight to the spool (the shared spool is not empty, or is
        being filled). Otherwise publish; if the broker does not confirm, take a grant
        first, which turns spool mode on for every worker, then spool.
        """
        if not ticket.granted:
            try:
                await self._delivery.publish(record)
            except DeliveryError as exc:
                log.warning(
                    "broker did not confirm; spooling",
                    extra={"topic": record.topic, "error": _describe(exc)},
                )
                ticket.force_spool()
            else:
                if ticket.key is not None:
                    self._remember(ticket.key)
                return Stored.BROKER
        try:
            await asyncio.wrap_future(self._spool.append(kind, record, ticket.key))
        except SpoolError as exc:
            raise StoreFailed(str(exc)) from None
        self.spooled_wakeup.set()
        return Stored.SPOOL

    async def publish(self, record: Record) -> None:
        """Send one record and wait for the broker's confirmation (or DeliveryError).

        No asyncio timeout here: the producer's delivery.timeout.ms is the confirm timeout
        (see app.listener_producer_config), so librdkafka always reports, success or error.
        """
        await self._delivery.publish(record)

    async def _to_spool(self, record: Record, kind: str, seen_key: str | None) -> Stored:
        if self.backlog == 0:
            log.warning("spool mode on: new messages go to the local spool until it drains")
        self.backlog += 1
        try:
            await asyncio.wrap_future(self._spool.append(kind, record, seen_key))
        except SpoolError as exc:
            self.backlog -= 1
            raise StoreFailed(str(exc)) from None
        self.spooled_wakeup.set()
        return Stored.SPOOL

    def _remember(self, seen_key: str) -> None:
        """Record a published message as seen, written with the next batch of keys.

        The message is already in Kafka, so this entry only prevents a duplicate. Waiting
        for its own fsync would add a thread round trip to every ACK; batching leaves a
        few milliseconds in which a crash could forget the entry, and the cost of that is
        a possible duplicate on a resend, never a loss.
        """
        self._seen_batch.append(seen_key)
        if self._seen_flush is None:
            loop = asyncio.get_running_loop()
            self._seen_flush = loop.call_later(_SEEN_BATCH_S, self.flush_seen)

    def flush_seen(self) -> None:
        self._seen_flush = None
        if self._seen_batch:
            keys, self._seen_batch = self._seen_batch, []
            self._spool.remember(keys).add_done_callback(_log_remember_failure)

    def drained(self, count: int) -> None:
        """The forwarder published and deleted ``count`` spooled rows."""
        self.backlog = max(0, self.backlog - count)
        if self.backlog == 0:
            log.info("spool drained; publishing directly again")


def _log_remember_failure(future: Future[None]) -> None:
    error = future.exception()
    if error is not None:
        log.warning("could not record message as seen", extra={"error": str(error)})


def _describe(exc: BaseException) -> str:
    if isinstance(exc, DeliveryError):
        return exc.error.name()
    return "no delivery report in time"
