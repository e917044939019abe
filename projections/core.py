"""What a projection is, the effects its pure ``project(event)`` returns, and the one
generic applier that turns a batch of effects into SQL.

Two effect kinds cover every read model:

* ``Versioned``: "resource ``key`` looked like this at ``version``". Its (kind, key,
  version) goes into the history table once (a repeat is a duplicate, a no-op); the
  current-state row is replaced only by a higher version (a lower one is stale: kept in
  history, ignored for the current state). The end state is a function of the *set* of
  events seen, so any order and any duplicates converge.
* ``Fact``: an insert-once row keyed by its primary key (merge links, ledger entries).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fhirbus.schemas.envelope import CanonicalEvent

from .migrations import Migration
from .store import Tx, insert_returning, insert_rows, select_in


@dataclass(frozen=True, slots=True)
class Versioned:
    table: str
    key: str
    version: int
    values: tuple[Any, ...]  # the table's value columns, in TableSpec order
    # Breaks a tie between two different events stating the same version, so the winner
    # does not depend on arrival order. Projections that must not keep raw ids hash it.
    event_id: str = ""
    event_type: str | None = None
    status: str | None = None
    occurred_at: str | None = None
    payload: str | None = None  # kept per version in history (None: keep no content)
    # A reconciliation repair: it may restate a version already seen, so it heals a row
    # that was deleted or corrupted in place; it still never replaces a newer version.
    repair: bool = False


@dataclass(frozen=True, slots=True)
class Fact:
    table: str
    row: tuple[Any, ...]


Effect = Versioned | Fact

# Causation ids of reconciliation runs start with this; their events are repairs.
REPAIR_CAUSATION_PREFIX = "reconcile-"


def is_repair(event: CanonicalEvent) -> bool:
    return (event.causation_id or "").startswith(REPAIR_CAUSATION_PREFIX)


def as_repairs(effects: Sequence[Effect]) -> list[Effect]:
    return [replace(e, repair=True) if isinstance(e, Versioned) else e for e in effects]


@dataclass(frozen=True)
class TableSpec:
    """A current-state table: ``id`` primary key, ``version``, ``event_id``, then
    ``columns``. A row is replaced only by a higher (version, event_id)."""

    name: str
    columns: tuple[str, ...]
    types: Mapping[str, str] = field(default_factory=dict)  # SQL type per column; TEXT if absent

    @property
    def all_columns(self) -> tuple[str, ...]:
        return ("id", "version", "event_id", *self.columns)

    @property
    def sql_types(self) -> tuple[str, ...]:
        return ("TEXT", "BIGINT", "TEXT", *(self.types.get(c, "TEXT") for c in self.columns))

    def upsert_tail(self, p: str, repair: bool = False) -> str:
        """The ON CONFLICT clause: a row is replaced only by a higher (version, event_id)."""
        sets = ", ".join(f"{c} = excluded.{c}" for c in ("version", "event_id", *self.columns))
        t = f"{p}{self.name}"
        if repair:  # an equal version is rewritten: that is what heals a corrupted row
            return f"ON CONFLICT (id) DO UPDATE SET {sets} WHERE {t}.version <= excluded.version"
        return (
            f"ON CONFLICT (id) DO UPDATE SET {sets} WHERE {t}.version < excluded.version "
            f"OR ({t}.version = excluded.version AND {t}.event_id < excluded.event_id)"
        )


@dataclass(frozen=True)
class FactSpec:
    name: str
    columns: tuple[str, ...]
    types: Mapping[str, str] = field(default_factory=dict)  # SQL type per column; TEXT if absent

    @property
    def sql_types(self) -> tuple[str, ...]:
        return tuple(self.types.get(c, "TEXT") for c in self.columns)


@dataclass
class ApplyResult:
    applied: int = 0
    duplicates: int = 0
    stale: int = 0
    repaired: int = 0
    fresh: list[Versioned] = field(default_factory=list)  # new to history (applied or stale)

    def counts(self) -> dict[str, int]:
        counts = {"applied": self.applied, "duplicates": self.duplicates, "stale": self.stale}
        return {**counts, "repaired": self.repaired} if self.repaired else counts


AfterApply = Callable[[Tx, str, ApplyResult], None]


@dataclass(frozen=True)
class Projection:
    """A read model: its topics, schema, pure projection function and tables."""

    name: str
    topics: tuple[str, ...]
    migrations: tuple[Migration, ...]
    tables: tuple[TableSpec, ...]
    facts: tuple[FactSpec, ...]
    project: Callable[[CanonicalEvent], list[Effect]]
    after_apply: AfterApply | None = None

    @property
    def all_tables(self) -> tuple[str, ...]:
        own = tuple(t.name for t in self.tables) + tuple(f.name for f in self.facts)
        return (*own, "history", "positions", "stats")

    def apply(self, tx: Tx, p: str, effects: Sequence[Effect]) -> ApplyResult:
        versioned = [e for e in effects if isinstance(e, Versioned)]
        result = apply_versioned(tx, p, {t.name: t for t in self.tables}, versioned)
        apply_facts(tx, p, {f.name: f for f in self.facts}, [e for e in effects
                                                            if isinstance(e, Fact)])
        if self.after_apply is not None and result.fresh:
            self.after_apply(tx, p, result)
        return result


_HISTORY_COLS = ("kind", "key", "version", "event_id", "event_type", "status", "occurred_at",
                 "payload")
_HISTORY_TYPES = ("text", "text", "bigint", "text", "text", "text", "text", "text")


def apply_versioned(
    tx: Tx, p: str, specs: dict[str, TableSpec], effects: Sequence[Versioned]
) -> ApplyResult:
    result = ApplyResult()
    if not effects:
        return result
    rows = [
        (e.table, e.key, e.version, e.event_id, e.event_type, e.status, e.occurred_at,
         e.payload)
        for e in effects
    ]
    new = {
        (k, key, int(v), eid)
        for k, key, v, eid in insert_returning(
            tx, f"{p}history", _HISTORY_COLS, _HISTORY_TYPES, rows,
            "ON CONFLICT DO NOTHING RETURNING kind, key, version, event_id",
        )
    }
    current = _current_versions(
        tx, p, [e for e in effects if e.repair or (e.table, e.key, e.version, e.event_id) in new]
    )
    winners: dict[tuple[str, str], Versioned] = {}
    repairs: dict[tuple[str, str], Versioned] = {}
    for e in effects:
        ident = (e.table, e.key, e.version, e.event_id)
        if e.repair:
            _take_repair(e, current, repairs, result)
            new.discard(ident)
            continue
        if ident not in new:
            result.duplicates += 1
            continue
        new.discard(ident)  # a repeat later in this batch is a duplicate
        result.fresh.append(e)
        best = current.get((e.table, e.key))
        if best is None or (e.version, e.event_id) > best:
            current[(e.table, e.key)] = (e.version, e.event_id)
            winners[(e.table, e.key)] = e
            result.applied += 1
        else:
            result.stale += 1
    _upsert(tx, p, specs, winners.values())
    _upsert(tx, p, specs, repairs.values(), repair=True)
    return result


def _take_repair(e: Versioned, current: dict[tuple[str, str], tuple[int, str]],
                 repairs: dict[tuple[str, str], Versioned], result: ApplyResult) -> None:
    """A repair restates a version even when history already has it; it loses only to a
    newer version, so a late repair never rolls a row back."""
    best = current.get((e.table, e.key))
    if best is not None and e.version < best[0]:
        result.stale += 1
        return
    current[(e.table, e.key)] = (e.version, e.event_id)
    repairs[(e.table, e.key)] = e
    result.fresh.append(e)  # derived rows (billing's ledger) are recomputed for it too
    result.repaired += 1


def _current_versions(
    tx: Tx, p: str, effects: Sequence[Versioned]
) -> dict[tuple[str, str], tuple[int, str]]:
    keys: dict[str, set[str]] = {}
    for e in effects:
        keys.setdefault(e.table, set()).add(e.key)
    current: dict[tuple[str, str], tuple[int, str]] = {}
    for table, ids in keys.items():
        for rid, version, eid in select_in(
            tx, f"SELECT id, version, event_id FROM {p}{table} WHERE id IN ({{in}})",
            sorted(ids),
        ):
            current[(table, rid)] = (version, eid)
    return current


def _upsert(
    tx: Tx, p: str, specs: dict[str, TableSpec], winners: Any, repair: bool = False
) -> None:
    by_table: dict[str, list[tuple[Any, ...]]] = {}
    for e in winners:
        by_table.setdefault(e.table, []).append((e.key, e.version, e.event_id, *e.values))
    for table, rows in by_table.items():
        spec = specs[table]
        # One row per key (winners are per key), so one statement may upsert them all; the
        # WHERE guard keeps this right even if another writer got there first.
        insert_rows(tx, f"{p}{table}", spec.all_columns, spec.sql_types, rows,
                    spec.upsert_tail(p, repair))


def apply_facts(tx: Tx, p: str, specs: dict[str, FactSpec], facts: Sequence[Fact]) -> None:
    by_table: dict[str, list[tuple[Any, ...]]] = {}
    for f in facts:
        by_table.setdefault(f.table, []).append(f.row)
    for table, rows in by_table.items():
        spec = specs[table]
        insert_rows(tx, f"{p}{table}", spec.columns, spec.sql_types, rows,
                    "ON CONFLICT DO NOTHING")


def current_table_ddl(spec: TableSpec, types: Mapping[str, str] | None = None) -> str:
    """DDL for a current-state table; columns default to TEXT (types: the spec's own)."""
    types = spec.types if types is None else types
    cols = ", ".join(f"{c} {types.get(c, 'TEXT')}" for c in spec.columns)
    return (
        f"CREATE TABLE IF NOT EXISTS {{p}}{spec.name} (id TEXT PRIMARY KEY, "
        f"version BIGINT NOT NULL, event_id TEXT NOT NULL, {cols})"
    )
