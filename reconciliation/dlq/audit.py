"""The dead-letter audit store: who replayed or purged what, when, with which filter, and
which DLQ records each action covered. SQLite under ``<state_dir>/dlq/audit.sqlite``.

It is also what makes a second ``replay`` of the same records a no-op at the toolset level:
a record with a replay row is skipped unless the operator forces it. Rows are written only
after the broker confirmed every replayed record, so a crash in between replays them again
on the next run (downstream consumers are idempotent: same event ids, same versions).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dlq_action (
    action_id TEXT PRIMARY KEY,
    action    TEXT NOT NULL,           -- replay | purge
    actor     TEXT NOT NULL,
    at        TEXT NOT NULL,           -- ISO-8601 UTC
    dlq_topic TEXT NOT NULL,
    filter    TEXT NOT NULL,           -- JSON of the given conditions
    target    TEXT,                    -- replay: --to, or NULL for original topics
    selected  INTEGER NOT NULL,
    done      INTEGER NOT NULL,
    skipped   INTEGER NOT NULL,
    note      TEXT
);
CREATE TABLE IF NOT EXISTS dlq_replayed (
    dlq_topic        TEXT NOT NULL,
    dlq_partition    INTEGER NOT NULL,
    dlq_offset       INTEGER NOT NULL,
    action_id        TEXT NOT NULL REFERENCES dlq_action(action_id),
    target_topic     TEXT NOT NULL,
    target_partition INTEGER NOT NULL,
    target_offset    INTEGER NOT NULL,
    PRIMARY KEY (dlq_topic, dlq_partition, dlq_offset, action_id)
);
CREATE TABLE IF NOT EXISTS dlq_purged (
    dlq_topic     TEXT NOT NULL,
    dlq_partition INTEGER NOT NULL,
    dlq_offset    INTEGER NOT NULL,
    action_id     TEXT NOT NULL REFERENCES dlq_action(action_id),
    PRIMARY KEY (dlq_topic, dlq_partition, dlq_offset)
);
"""

Position = tuple[int, int]


@dataclass(frozen=True)
class Action:
    action_id: str
    action: str
    actor: str
    dlq_topic: str
    filter: dict[str, Any]
    target: str | None
    selected: int
    done: int
    skipped: int
    note: str = ""
    at: datetime | None = None


@dataclass(frozen=True)
class Replayed:
    partition: int
    offset: int
    target_topic: str
    target_partition: int
    target_offset: int


def default_path(state_dir: Path) -> Path:
    return state_dir / "dlq" / "audit.sqlite"


class AuditStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> AuditStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def replayed(self, dlq_topic: str) -> set[Position]:
        rows = self._db.execute(
            "SELECT DISTINCT dlq_partition, dlq_offset FROM dlq_replayed WHERE dlq_topic = ?",
            (dlq_topic,),
        )
        return {(p, o) for p, o in rows}

    def purged(self, dlq_topic: str) -> set[Position]:
        rows = self._db.execute(
            "SELECT dlq_partition, dlq_offset FROM dlq_purged WHERE dlq_topic = ?", (dlq_topic,)
        )
        return {(p, o) for p, o in rows}

    def record_replay(self, action: Action, rows: Iterable[Replayed]) -> None:
        """The action and every record it replayed, in one transaction."""
        with self._db:
            self._insert_action(action)
            self._db.executemany(
                "INSERT INTO dlq_replayed VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(action.dlq_topic, r.partition, r.offset, action.action_id, r.target_topic,
                  r.target_partition, r.target_offset) for r in rows],
            )

    def record_purge(self, action: Action, positions: Iterable[Position]) -> None:
        with self._db:
            self._insert_action(action)
            self._db.executemany(
                "INSERT OR IGNORE INTO dlq_purged VALUES (?, ?, ?, ?)",
                [(action.dlq_topic, p, o, action.action_id) for p, o in positions],
            )

    def actions(self, dlq_topic: str | None = None, limit: int = 50) -> list[Action]:
        sql = ("SELECT action_id, action, actor, dlq_topic, filter, target, selected, done, "
               "skipped, note, at FROM dlq_action")
        args: tuple[Any, ...] = ()
        if dlq_topic:
            sql += " WHERE dlq_topic = ?"
            args = (dlq_topic,)
        sql += " ORDER BY at DESC, rowid DESC LIMIT ?"
        rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [Action(r[0], r[1], r[2], r[3], orjson.loads(r[4]), r[5], r[6], r[7], r[8],
                       r[9] or "", datetime.fromisoformat(r[10])) for r in rows]

    def replays_of(self, action_id: str) -> list[Replayed]:
        rows = self._db.execute(
            "SELECT dlq_partition, dlq_offset, target_topic, target_partition, target_offset "
            "FROM dlq_replayed WHERE action_id = ? ORDER BY dlq_partition, dlq_offset",
            (action_id,),
        )
        return [Replayed(*r) for r in rows]

    def _insert_action(self, action: Action) -> None:
        at = (action.at or datetime.now(UTC)).isoformat()
        self._db.execute(
            "INSERT INTO dlq_action VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (action.action_id, action.action, action.actor, at, action.dlq_topic,
             orjson.dumps(action.filter, option=orjson.OPT_SORT_KEYS).decode(), action.target,
             action.selected, action.done, action.skipped, action.note),
        )
