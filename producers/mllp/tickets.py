"""A worker's claims on the shared table (claims.py), one ticket per message being stored.

``claim`` answers at once in the common case (the key is new): one locked look-up. A
resend whose first copy is being stored right now (by any worker) waits here, polling the
table, until that copy is stored (then it is a duplicate) or given up (then this one
stores it). Reports of finished messages (``Ticket.done``) are collected and written with
the next claim or at the end of the loop iteration, one lock for many.

A worker that dies before its reports are written leaves its claims to be taken over
(claims.py, generations): at worst a resend of a message it had acknowledged is stored a
second time, as a crash of the single process could also cause, never a loss.
"""

from __future__ import annotations

import asyncio
import time

from .claims import NEW_SPOOL, SEEN, WAIT, ClaimTable, Finish

# A resend waiting for its first copy looks again after this, doubling up to the maximum.
_WAIT_MIN_S, _WAIT_MAX_S = 0.002, 0.05


class Ticket:
    """The right to store one message; ``done`` must be called once, stored or not."""

    __slots__ = ("_claims", "granted", "key", "offset")

    def __init__(self, claims: WorkerClaims, key: str | None, granted: bool, offset: int):
        self._claims = claims
        self.key = key
        self.granted = granted  # a spool grant: it goes to the spool
        self.offset = offset

    def force_spool(self) -> None:
        """The broker did not confirm it: spool it, and every worker spools until drained."""
        if not self.granted:
            self._claims.table.force_spool()
            self.granted = True

    def done(self, stored: bool) -> None:
        self._claims.finished(self.offset, self.granted, stored)


class WorkerClaims:
    def __init__(self, table: ClaimTable) -> None:
        self.table = table
        self.index = table.worker
        self._finished: list[Finish] = []
        self._flush_pending = False
        self._loop = asyncio.get_running_loop()

    def claim(self, key: str | None) -> Ticket | int:
        """A ticket, or SEEN (do not store), or WAIT (then ``wait``)."""
        answer, offset = self.table.claim(key, time.time(), self._finished)
        if answer in (SEEN, WAIT):
            return answer
        return Ticket(self, key, answer == NEW_SPOOL, offset)

    async def wait(self, key: str) -> Ticket | None:
        """Until the other copy is stored (None: a duplicate) or given up (a ticket)."""
        delay = _WAIT_MIN_S
        while True:
            await asyncio.sleep(delay)
            delay = min(_WAIT_MAX_S, delay * 2)
            result = self.claim(key)
            if result == SEEN:
                return None
            if isinstance(result, Ticket):
                return result

    def finished(self, offset: int, granted: bool, stored: bool) -> None:
        self._finished.append((offset, granted, stored))
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_pending = False
        if self._finished:
            self.table.finish(self._finished, time.time())
