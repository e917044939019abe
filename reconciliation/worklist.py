"""The review worklist and the run history, in one small database (SQLite under the state
dir by default, or PostgreSQL: ``FHIRBUS_RECONCILE__DSN``).

High-risk drift is not repaired automatically: it becomes a worklist item with full
provenance, which an operator lists, resolves (with a note) or replays.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from fhirbus.projections.store import Store, open_store
from fhirbus.settings import Settings

from .model import Drift, RunReport

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS reconcile_worklist (id INTEGER PRIMARY KEY, run_id TEXT NOT"
    " NULL, check_name TEXT NOT NULL, drift_class TEXT NOT NULL, risk TEXT NOT NULL,"
    " resource_type TEXT NOT NULL, resource_id TEXT NOT NULL, expected_version BIGINT,"
    " actual_version BIGINT, expected_hash TEXT, actual_hash TEXT, provenance TEXT NOT NULL,"
    " status TEXT NOT NULL, note TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS reconcile_worklist_status ON reconcile_worklist (status)",
    "CREATE TABLE IF NOT EXISTS reconcile_runs (run_id TEXT PRIMARY KEY, started_at TEXT NOT"
    " NULL, finished_at TEXT NOT NULL, drift INTEGER NOT NULL, report TEXT NOT NULL)",
)
_COLS = ("id", "run_id", "check_name", "drift_class", "risk", "resource_type", "resource_id",
         "expected_version", "actual_version", "expected_hash", "actual_hash", "provenance",
         "status", "note", "created_at", "updated_at")
STATUSES = ("open", "resolved", "replayed")


@dataclass(frozen=True)
class Item:
    id: int
    run_id: str
    check_name: str
    drift_class: str
    risk: str
    resource_type: str
    resource_id: str
    expected_version: int | None
    actual_version: int | None
    expected_hash: str | None
    actual_hash: str | None
    provenance: dict[str, Any]
    status: str
    note: str | None
    created_at: str
    updated_at: str

    def to_json(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in _COLS}


def dsn_for(settings: Settings) -> str:
    if settings.reconcile.dsn:
        return settings.reconcile.dsn
    return f"sqlite://{settings.state_dir / 'reconcile' / 'reconcile.sqlite'}"


class Worklist:
    def __init__(self, store: Store) -> None:
        self.store = store
        with store.transaction() as tx:
            for statement in SCHEMA:
                tx.execute(statement.replace("INTEGER PRIMARY KEY", "BIGSERIAL PRIMARY KEY")
                           if tx.dialect == "postgresql" else statement)

    @classmethod
    def open(cls, settings: Settings) -> Worklist:
        return cls(open_store(dsn_for(settings)))

    def close(self) -> None:
        self.store.close()

    def add(self, run_id: str, drift: Drift) -> int:
        """One open item per (check, resource, class): a drift seen again by a later run
        is the same item, not a new one."""
        now = _now()
        with self.store.transaction() as tx:
            found = tx.execute(
                "SELECT id FROM reconcile_worklist WHERE status = 'open' AND check_name = ? "
                "AND resource_type = ? AND resource_id = ? AND drift_class = ?",
                (drift.check, drift.resource_type, drift.resource_id, drift.drift_class))
            if found:
                return int(found[0][0])
            rows = tx.execute(
                f"INSERT INTO reconcile_worklist ({', '.join(_COLS[1:])}) VALUES "
                f"({', '.join('?' * (len(_COLS) - 1))}) RETURNING id",
                (run_id, drift.check, drift.drift_class, drift.risk, drift.resource_type,
                 drift.resource_id, drift.expected_version, drift.actual_version,
                 drift.expected_hash, drift.actual_hash, orjson.dumps(drift.provenance).decode(),
                 "open", drift.note or None, now, now))
            return int(rows[0][0])

    def items(self, status: str | None = "open") -> list[Item]:
        where, params = ("WHERE status = ?", (status,)) if status else ("", ())
        with self.store.transaction(lock=False) as tx:
            rows = tx.execute(f"SELECT {', '.join(_COLS)} FROM reconcile_worklist {where} "
                              "ORDER BY id", params)
        return [_item(r) for r in rows]

    def get(self, item_id: int) -> Item:
        with self.store.transaction(lock=False) as tx:
            rows = tx.execute(f"SELECT {', '.join(_COLS)} FROM reconcile_worklist WHERE id = ?",
                              (item_id,))
        if not rows:
            raise LookupError(f"no worklist item {item_id}; `fhirbus reconcile worklist list` "
                              "shows the open ones")
        return _item(rows[0])

    def set_status(self, item_id: int, status: str, note: str | None = None) -> None:
        self.get(item_id)
        with self.store.transaction() as tx:
            tx.execute("UPDATE reconcile_worklist SET status = ?, note = coalesce(?, note), "
                       "updated_at = ? WHERE id = ?", (status, note, _now(), item_id))

    def record_run(self, report: RunReport) -> None:
        with self.store.transaction() as tx:
            tx.execute("INSERT INTO reconcile_runs VALUES (?, ?, ?, ?, ?)",
                       (report.run_id, report.started_at.isoformat(),
                        (report.finished_at or datetime.now(UTC)).isoformat(),
                        len(report.drift), orjson.dumps(report.counts()).decode()))

    def drift_streak_start(self) -> datetime | None:
        """When the current streak of runs with drift began (None: the last run was clean
        or there is no history)."""
        with self.store.transaction(lock=False) as tx:
            rows = tx.execute("SELECT started_at, drift FROM reconcile_runs "
                              "ORDER BY started_at DESC")
        start = None
        for started_at, drift in rows:
            if not drift:
                break
            start = datetime.fromisoformat(started_at)
        return start


def _item(row: tuple[Any, ...]) -> Item:
    values = dict(zip(_COLS, row, strict=True))
    values["provenance"] = orjson.loads(values["provenance"])
    return Item(**values)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
