"""The retransmission window: which messages were already stored, and which are in flight.

Keys are hashes (see ``intake.dedup_key``); the durable copy lives in the spool database's
``seen`` table and is loaded back at start, so a resend after a crash is still recognised.
A resend that arrives while its first copy is still being stored waits for that outcome
and answers the same, rather than racing it into a second publish.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class DedupWindow:
    def __init__(self, window_s: float, max_entries: int = 1_000_000) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        # Insertion order is time order, so expiry pops from the front.
        self._seen: dict[str, float] = {}
        self._inflight: dict[str, asyncio.Future[tuple[str, object]] | None] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def load(self, entries: Iterable[tuple[str, float]]) -> None:
        for key, at in entries:
            self._seen.pop(key, None)
            self._seen[key] = at

    def seen(self, key: str, now: float) -> bool:
        at = self._seen.get(key)
        # A zero window turns retransmission detection off.
        return at is not None and self.window_s > 0 and now - at <= self.window_s

    def add(self, key: str, now: float) -> None:
        self._seen.pop(key, None)
        self._seen[key] = now
        if len(self._seen) > self.max_entries:
            # Bounded memory beats an unbounded window; the oldest keys go first.
            del self._seen[next(iter(self._seen))]

    def expire(self, now: float) -> int:
        cutoff = now - self.window_s
        removed = 0
        for key, at in list(self._seen.items()):
            if at >= cutoff:
                break
            del self._seen[key]
            removed += 1
        return removed

    def in_flight(self, key: str) -> asyncio.Future[tuple[str, object]] | None:
        """A future for the outcome of ``key``'s first copy when it is still being stored.

        The future is only made when a resend actually asks (rare): an asyncio future per
        message, created and resolved for nobody, was measurable at thousands per second.
        """
        if key not in self._inflight:
            return None
        future = self._inflight[key]
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._inflight[key] = future
        return future

    def begin(self, key: str) -> None:
        self._inflight[key] = None

    def end(self, key: str, outcome: tuple[str, object]) -> None:
        """The first copy is answered: resends that waited for it get the same outcome."""
        future = self._inflight.pop(key, None)
        if future is not None and not future.done():
            future.set_result(outcome)
