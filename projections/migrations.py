"""Versioned schema migrations, per projection and per generation.

A read model's tables carry a generation prefix (``ehr_g1_patients``) so ``rebuild`` can
build generation 2 beside generation 1 and swap. Each projection declares an ordered list of
migrations; ``migrate`` applies the missing ones, each in its own transaction, and records
it in ``fhirbus_schema_migrations``. Statements use ``{p}`` for the table prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from .store import Store, Tx

MIGRATIONS_TABLE = "fhirbus_schema_migrations"
GENERATIONS_TABLE = "fhirbus_projection_generations"


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]
    # A step SQL cannot express (it needs a key the database must not hold), run after the
    # statements in the same transaction, with the table prefix.
    rewrite: Callable[[Tx, str], None] | None = None


# Tables every projection has: where it is in each partition, its counters, and the set
# of (kind, key, version) it has seen, which is what makes a duplicate a no-op.
COMMON = Migration(
    1,
    "positions, stats, history",
    (
        "CREATE TABLE IF NOT EXISTS {p}positions (topic TEXT NOT NULL, part INTEGER NOT NULL,"
        " next_offset BIGINT NOT NULL, PRIMARY KEY (topic, part))",
        "CREATE TABLE IF NOT EXISTS {p}stats (metric TEXT PRIMARY KEY, value BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS {p}history (kind TEXT NOT NULL, key TEXT NOT NULL,"
        " version BIGINT NOT NULL, event_id TEXT NOT NULL, event_type TEXT, status TEXT,"
        " occurred_at TEXT, payload TEXT, PRIMARY KEY (kind, key, version, event_id))",
    ),
)


def prefix(projection: str, generation: int) -> str:
    if not projection.isidentifier():
        raise ValueError(f"invalid projection name {projection!r}")
    return f"{projection}_g{int(generation)}_"


def ensure_catalog(tx: Tx) -> None:
    tx.execute(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (projection TEXT NOT NULL,"
        " generation INTEGER NOT NULL, version INTEGER NOT NULL, description TEXT NOT NULL,"
        " applied_at TEXT NOT NULL, PRIMARY KEY (projection, generation, version))"
    )
    tx.execute(
        f"CREATE TABLE IF NOT EXISTS {GENERATIONS_TABLE} (projection TEXT PRIMARY KEY,"
        " active INTEGER NOT NULL, updated_at TEXT NOT NULL)"
    )


def _serialize(tx: Tx, projection: str) -> None:
    """Two processes starting at once must not both run a migration: SQLite's IMMEDIATE
    transaction already serializes; PostgreSQL takes a transaction-scoped advisory lock."""
    if tx.dialect == "postgresql":
        tx.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (f"fhirbus:{projection}",))


def applied_versions(tx: Tx, projection: str, generation: int) -> set[int]:
    rows = tx.execute(
        f"SELECT version FROM {MIGRATIONS_TABLE} WHERE projection = ? AND generation = ?",
        (projection, generation),
    )
    return {r[0] for r in rows}


def migrate(
    store: Store, projection: str, generation: int, migrations: Sequence[Migration]
) -> list[int]:
    """Apply what is missing, in version order; returns the versions applied now."""
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)):
        raise ValueError(f"{projection}: migration versions must be unique and ascending")
    done: list[int] = []
    p = prefix(projection, generation)
    for m in migrations:
        with store.transaction() as tx:
            _serialize(tx, projection)
            ensure_catalog(tx)
            if m.version in applied_versions(tx, projection, generation):
                continue
            for statement in m.statements:
                tx.execute(statement.replace("{p}", p))
            if m.rewrite is not None:
                m.rewrite(tx, p)
            tx.execute(
                f"INSERT INTO {MIGRATIONS_TABLE} VALUES (?, ?, ?, ?, ?)",
                (projection, generation, m.version, m.description, _now()),
            )
            done.append(m.version)
    return done


def drop_generation(store: Store, projection: str, generation: int, tables: Sequence[str]) -> None:
    """Drop a generation's tables (after a swap) and forget its migrations."""
    p = prefix(projection, generation)
    with store.transaction() as tx:
        _serialize(tx, projection)
        for table in tables:
            tx.execute(f"DROP TABLE IF EXISTS {p}{table}")
        tx.execute(
            f"DELETE FROM {MIGRATIONS_TABLE} WHERE projection = ? AND generation = ?",
            (projection, generation),
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
