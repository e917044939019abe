"""Drains the spool to Kafka in arrival order, deleting rows only after the broker confirmed.

Rows go out in batches; only the longest confirmed prefix of a batch is deleted, so a failed
row and everything after it are sent again next round (the idempotent producer keeps the
partition's order; a resend after a partial failure may duplicate, never lose or reorder
the first copy). While the broker is failing, rounds shrink to a single probe row with
exponential backoff, so a down broker does not cause a burst of duplicates when it returns.

A row the broker refuses for a reason that is the record's own (too large for the topic,
an invalid record) would fail the same way forever and hold every row behind it. When such
a row fails alone (as the single probe row), it is moved to the spool's ``refused`` table
with the reason, counted, logged at ERROR, and the forwarder carries on. A refusal seen in
a batch is not trusted yet: a batch can be too large where each of its records fits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from confluent_kafka import KafkaError

from fhirbus.kafka.producer import DeliveryError

from .claims import ClaimTable
from .metrics import ListenerMetrics
from .sink import DurableSink
from .spool import Spool, Spooled, SpoolError

log = logging.getLogger(__name__)
# Spool empty but appends still granted: look again this soon.
_RECHECK_S = 0.02
# Not in spool mode: how often worker 0 looks whether another worker turned it on.
_IDLE_CHECK_S = 0.05
# Refusals caused by the record itself: sending it again cannot succeed.
_RECORD_REFUSALS = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_RECORD,
})


def record_refusal(error: BaseException) -> str | None:
    """The reason when ``error`` says the broker will never take this record, else None."""
    if (
        isinstance(error, DeliveryError)
        and not error.error.fatal()
        and error.error.code() in _RECORD_REFUSALS
    ):
        return str(error.error.name())
    return None


class Forwarder:
    def __init__(
        self,
        sink: DurableSink,
        spool: Spool,
        metrics: ListenerMetrics,
        *,
        batch: int = 500,
        backoff_min_s: float = 0.2,
        backoff_max_s: float = 5.0,
    ) -> None:
        self._sink = sink
        self._spool = spool
        self._metrics = metrics
        self._batch = batch
        self._backoff = (backoff_min_s, backoff_max_s)
        self._failures = 0

    async def run(self) -> None:
        while True:
            if self._sink.backlog == 0:
                self._sink.spooled_wakeup.clear()
                await self._sink.spooled_wakeup.wait()
                continue
            rows = await self._read()
            if not rows:
                # Appends counted in the backlog are still committing; their commit wakes us.
                self._sink.spooled_wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._sink.spooled_wakeup.wait(), 1.0)
                continue
            confirmed = await self._forward(rows)
            if confirmed < len(rows):
                self._failures += 1
                await asyncio.sleep(self._delay())
            else:
                self._failures = 0

    async def _read(self) -> list[Spooled]:
        limit = 1 if self._failures else self._batch
        try:
            return await asyncio.wrap_future(self._spool.read(limit))
        except SpoolError as exc:
            log.error("cannot read spool", extra={"error": str(exc)})
            await asyncio.sleep(self._delay())
            return []

    async def _forward(self, rows: list[Spooled]) -> int:
        """Publish rows; delete the confirmed prefix; returns its length."""
        results = await asyncio.gather(
            *(self._sink.publish(row.record) for row in rows), return_exceptions=True
        )
        confirmed = 0
        for result in results:
            if isinstance(result, BaseException):
                break
            confirmed += 1
        if len(rows) == 1 and confirmed == 0:
            reason = record_refusal(results[0])  # type: ignore[arg-type]
            if reason is not None:
                return await self._refuse(rows[0], reason)
        if confirmed:
            try:
                await asyncio.wrap_future(self._spool.delete([r.seq for r in rows[:confirmed]]))
            except SpoolError as exc:
                # Rows stay and go out again: a duplicate downstream, never a loss.
                log.error("cannot delete forwarded rows", extra={"error": str(exc)})
                return 0
            self._drained(confirmed)
            self._metrics.forwarded(confirmed)
        if confirmed < len(rows):
            log.warning(
                "spool forward incomplete; will retry",
                extra={
                    "confirmed": confirmed,
                    "attempted": len(rows),
                    "backlog": self._sink.backlog,
                },
            )
        return confirmed

    async def _refuse(self, row: Spooled, reason: str) -> int:
        """Move a row the broker will never take out of the way; 1 when moved (progress)."""
        try:
            await asyncio.wrap_future(self._spool.refuse(row.seq, reason))
        except SpoolError as exc:
            log.error("cannot move a refused row", extra={"error": str(exc)})
            return 0
        self._drained(1)
        self._metrics.refused()
        # The row's content is PHI: only where it is and why, never what.
        log.error(
            "broker refused a spooled record for good; moved to the spool's refused table",
            extra={
                "seq": row.seq,
                "topic": row.record.topic,
                "kind": row.kind,
                "reason": reason,
                "size": len(row.record.value),
                "spool": str(self._spool.path),
            },
        )
        return 1

    def _delay(self) -> float:
        low, high = self._backoff
        return min(high, low * 2 ** max(0, self._failures - 1))

    def _drained(self, count: int) -> None:
        self._sink.drained(count)


class SharedForwarder(Forwarder):
    """Worker 0's forwarder for the spool all workers share (claims.py).

    Spool mode is a flag on the shared table: any worker turns it on, and only this
    forwarder turns it off, by the handshake in ``_try_clear``: no spool grant outstanding,
    the spool seen empty after that, and no grant made meanwhile.
    """

    def __init__(
        self, sink: DurableSink, spool: Spool, metrics: ListenerMetrics, table: ClaimTable
    ) -> None:
        super().__init__(sink, spool, metrics)
        self._table = table

    async def run(self) -> None:
        table = self._table
        while True:
            if not table.spooling:
                while not table.spooling:
                    await asyncio.sleep(_IDLE_CHECK_S)
                log.warning("spool mode on: every worker spools until the spool drains")
            rows = await self._read()
            if rows:
                confirmed = await self._forward(rows)
                self._failures = 0 if confirmed == len(rows) else self._failures + 1
                if self._failures:
                    await asyncio.sleep(self._delay())
            elif await self._try_clear():
                log.info("spool drained; publishing directly again")
            else:
                # Appends granted but not committed yet: their rows come next.
                await asyncio.sleep(_RECHECK_S)

    async def _try_clear(self) -> bool:
        made, outstanding = self._table.spool_status()
        if outstanding:
            return False
        try:
            if await asyncio.wrap_future(self._spool.read(1)):
                return False
        except SpoolError:
            return False
        return self._table.clear(made)  # only if no grant was made since spool_status

    def _drained(self, count: int) -> None:
        """Spool mode is the parent's, not a count here: nothing to track."""
