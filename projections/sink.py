"""The runtime Sink of every projection: a batch's effects, its positions and its counters
in one database transaction; positions read back when partitions are assigned.

A live sink follows the active generation (read, share-locked, inside each transaction),
so a rebuild's swap takes effect at the next batch with no restart; a rebuild's sink is
pinned to the generation it is building.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from confluent_kafka import OFFSET_BEGINNING

from fhirbus.consumers.records import Record

from . import positions as pos
from .core import Effect, Projection
from .metrics import ProjectionMetrics
from .migrations import migrate, prefix
from .store import Store, Tx

TopicPartition = tuple[str, int]


def prepare(store: Store, projection: Projection, generation: int | None = None) -> int:
    """Create or upgrade a generation's schema; returns the generation (default: active)."""
    gen = generation if generation is not None else pos.ensure_active(store, projection.name)
    migrate(store, projection.name, gen, projection.migrations)
    return gen


class ProjectionSink:
    def __init__(
        self,
        store: Store,
        projection: Projection,
        generation: int | None = None,
        metrics: ProjectionMetrics | None = None,
    ) -> None:
        self.store = store
        self.projection = projection
        self.pinned = generation
        self.metrics = metrics or ProjectionMetrics(projection.name)

    def _prefix(self, tx: Tx) -> str:
        gen = self.pinned
        if gen is None:
            gen = pos.active(tx, self.projection.name, share=True)
            if gen is None:
                raise RuntimeError(f"projection {self.projection.name} is not prepared")
        return prefix(self.projection.name, gen)

    def apply(self, records: Sequence[Record], positions: dict[TopicPartition, int]) -> None:
        effects: list[Effect] = [e for r in records for e in r.effects]
        self.apply_effects(effects, positions, len(records))

    def apply_effects(
        self, effects: Sequence[Effect], positions: dict[TopicPartition, int], events: int
    ) -> dict[str, int]:
        started = time.perf_counter()
        with self.store.transaction() as tx:
            p = self._prefix(tx)
            counts = self.projection.apply(tx, p, effects).counts()
            pos.save(tx, p, positions)
            elapsed = time.perf_counter() - started
            pos.add_stats(tx, p, {**counts, "events": events, "batches": 1,
                                  "apply_us": int(elapsed * 1e6)})
            pos.max_stat(tx, p, "apply_us_max", int(elapsed * 1e6))
        self.metrics.record_batch(events, counts, time.perf_counter() - started)
        return counts

    def stored_positions(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The database is the authority: a partition it has no position for starts at the
        beginning, whatever offsets the consumer group committed (a new database, a
        rebuild, or a reused group name must not skip what this model never applied)."""
        with self.store.transaction(lock=False) as tx:
            stored = pos.load(tx, self._prefix(tx), partitions)
        return {tp: stored.get(tp, OFFSET_BEGINNING) for tp in partitions}
