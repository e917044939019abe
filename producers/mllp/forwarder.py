"""Drains the spool to Kafka in arrival order, deleting rows only after the broker confirmed.

Rows go out in batches; only the longest confirmed prefix of a batch is deleted, so a failed
row and everything after it are sent again next round (the idempotent producer keeps the
partition's order; a resend after a partial failure may duplicate, never lose or reorder
the first copy). While the broker is failing, rounds shrink to a single probe row with
exponential backoff, so a down broker does not cause a burst of duplicates when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .metrics import ListenerMetrics
from .sink import DurableSink
from .spool import Spool, Spooled, SpoolError

log = logging.getLogger(__name__)


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
        if confirmed:
            try:
                await asyncio.wrap_future(self._spool.delete([r.seq for r in rows[:confirmed]]))
            except SpoolError as exc:
                # Rows stay and go out again: a duplicate downstream, never a loss.
                log.error("cannot delete forwarded rows", extra={"error": str(exc)})
                return 0
            self._sink.drained(confirmed)
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

    def _delay(self) -> float:
        low, high = self._backoff
        return min(high, low * 2 ** max(0, self._failures - 1))
