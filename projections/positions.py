"""Where each read model is: (topic, partition) -> next offset, its active generation, and
its counters. All of it is written inside the batch's transaction."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from .migrations import GENERATIONS_TABLE, ensure_catalog
from .store import Store, Tx, greatest

TopicPartition = tuple[str, int]


def save(tx: Tx, p: str, positions: Mapping[TopicPartition, int]) -> None:
    """Store next offsets; never move one back. After a rebuild swap, a live consumer may
    redeliver records the new generation already holds: they are duplicates (no-ops), and
    its older position must not overwrite the newer one."""
    if not positions:
        return
    tx.executemany(
        f"INSERT INTO {p}positions (topic, part, next_offset) VALUES (?, ?, ?) "
        f"ON CONFLICT (topic, part) DO UPDATE SET next_offset = "
        f"{greatest(tx, f'{p}positions.next_offset', 'excluded.next_offset')}",
        [(t, part, off) for (t, part), off in positions.items()],
    )


def load(tx: Tx, p: str, partitions: Iterable[TopicPartition] | None = None) -> dict[
    TopicPartition, int
]:
    rows = tx.execute(f"SELECT topic, part, next_offset FROM {p}positions")
    stored = {(t, part): off for t, part, off in rows}
    if partitions is None:
        return stored
    wanted = set(partitions)
    return {tp: off for tp, off in stored.items() if tp in wanted}


# -- generations ---------------------------------------------------------------------------
def active(tx: Tx, projection: str, share: bool = False) -> int | None:
    """The generation queries read and live consumers write. ``share`` holds a share lock
    on PostgreSQL for the rest of the transaction, so a swap waits for this batch (SQLite's
    IMMEDIATE transaction serializes them already)."""
    lock = " FOR SHARE" if share and tx.dialect == "postgresql" else ""
    rows = tx.execute(
        f"SELECT active FROM {GENERATIONS_TABLE} WHERE projection = ?{lock}", (projection,)
    )
    return rows[0][0] if rows else None


def lock_for_swap(tx: Tx, projection: str) -> int | None:
    lock = " FOR UPDATE" if tx.dialect == "postgresql" else ""
    rows = tx.execute(
        f"SELECT active FROM {GENERATIONS_TABLE} WHERE projection = ?{lock}", (projection,)
    )
    return rows[0][0] if rows else None


def set_active(tx: Tx, projection: str, generation: int) -> None:
    tx.execute(
        f"INSERT INTO {GENERATIONS_TABLE} (projection, active, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (projection) DO UPDATE SET active = excluded.active, "
        "updated_at = excluded.updated_at",
        (projection, generation, datetime.now(UTC).isoformat(timespec="seconds")),
    )


def ensure_active(store: Store, projection: str) -> int:
    """The active generation, creating generation 1 on first start."""
    with store.transaction() as tx:
        ensure_catalog(tx)
        gen = active(tx, projection)
        if gen is None:
            set_active(tx, projection, 1)
            gen = 1
        return gen


def max_generation(tx: Tx, projection: str) -> int:
    rows = tx.execute(
        "SELECT max(generation) FROM fhirbus_schema_migrations WHERE projection = ?",
        (projection,),
    )
    return rows[0][0] or 0 if rows else 0


# -- counters ------------------------------------------------------------------------------
def add_stats(tx: Tx, p: str, counts: Mapping[str, int]) -> None:
    rows = [(k, v) for k, v in counts.items() if v]
    if rows:
        tx.executemany(
            f"INSERT INTO {p}stats (metric, value) VALUES (?, ?) ON CONFLICT (metric) "
            f"DO UPDATE SET value = {p}stats.value + excluded.value",
            rows,
        )


def max_stat(tx: Tx, p: str, metric: str, value: int) -> None:
    tx.execute(
        f"INSERT INTO {p}stats (metric, value) VALUES (?, ?) ON CONFLICT (metric) "
        f"DO UPDATE SET value = {greatest(tx, f'{p}stats.value', 'excluded.value')}",
        (metric, value),
    )


def load_stats(tx: Tx, p: str) -> dict[str, int]:
    return dict(tx.execute(f"SELECT metric, value FROM {p}stats"))
