"""The initial snapshot: existing rows as ``op=r`` events, consistent with the slot's start.

The slot is created on a replication connection with ``EXPORT_SNAPSHOT``; a second
connection reads every table inside that exported snapshot (REPEATABLE READ) while the
replication connection stays idle, so the rows read are exactly the database as of the
slot's consistent point, and the slot then streams exactly the changes committed after it:
no gap, no duplicate.

A crash mid-snapshot must not leave a gap, so progress is a small state file written
before the slot is created (``pending``) and after the last snapshot event is acknowledged
(``done``), each time with fsync. A slot found with a ``pending`` state is dropped and the
snapshot starts over (repeated ``op=r`` events are harmless: they carry the same rows).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import psycopg
from psycopg import sql

from fhirbus.connectors.sources import SourceDeclaration

from . import catalog
from .changes import parse_lsn
from .events import Position, Record, SourceInfo, TableInfo, snapshot_record

log = logging.getLogger(__name__)
CHUNK = 2_000


@dataclass(frozen=True, slots=True)
class SnapshotState:
    slot: str
    status: str  # "pending" | "done" | "skipped"
    consistent_lsn: int | None = None
    rows: int = 0


def state_path(state_dir: Path, source: str) -> Path:
    return state_dir / "cdc" / f"{source}.json"


def read_state(path: Path) -> SnapshotState | None:
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    return SnapshotState(data["slot"], data["status"], data.get("consistent_lsn"),
                         data.get("rows", 0))


def write_state(path: Path, state: SnapshotState) -> None:
    """Atomically and durably: a crash leaves the old state or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(orjson.dumps({"slot": state.slot, "status": state.status,
                              "consistent_lsn": state.consistent_lsn, "rows": state.rows}))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


Publish = Callable[[list[Record]], None]  # sends and waits for every ack, or raises


def take_snapshot(source: SourceDeclaration, tables: list[TableInfo], plugin: str,
                  info: SourceInfo, publish: Publish, path: Path) -> SnapshotState:
    """Create the slot and publish every existing row; returns the ``done`` state."""
    write_state(path, SnapshotState(source.slot, "pending"))
    with catalog.connect(source.dsn, replication=True) as repl:
        created = repl.execute(sql.SQL("CREATE_REPLICATION_SLOT {} LOGICAL {} EXPORT_SNAPSHOT")
                               .format(sql.Identifier(source.slot), sql.Identifier(plugin))
                               ).fetchone()
        assert created is not None
        consistent = parse_lsn(created[1])
        log.info("cdc snapshot started", extra={"source": source.name, "slot": source.slot,
                                                "consistent_lsn": created[1]})
        rows = _read_and_publish(source, tables, info, publish, created[2], consistent)
    done = SnapshotState(source.slot, "done", consistent, rows)
    write_state(path, done)
    log.info("cdc snapshot done", extra={"source": source.name, "rows": rows})
    return done


def _read_and_publish(source: SourceDeclaration, tables: list[TableInfo], info: SourceInfo,
                      publish: Publish, snapshot_name: str, consistent: int) -> int:
    with catalog.connect(source.dsn, autocommit=False) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_name)))
        row = conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
                           ).fetchone()
        pos = Position(consistent, int(row[0]) if row else 0, int(time.time() * 1000), "true")
        batch: list[Record] = []
        pending: tuple[TableInfo, dict[str, object]] | None = None
        count = 0
        for table in tables:
            for raw in _rows(conn, table):
                if pending is not None:
                    batch.append(_record(info, source, pending, pos))
                pending = (table, raw)
                count += 1
                if len(batch) >= CHUNK:
                    publish(batch)
                    batch = []
        if pending is not None:
            last = Position(pos.lsn, pos.xid, pos.commit_ts_ms, "last")
            batch.append(_record(info, source, pending, last))
        if batch:
            publish(batch)
        conn.rollback()
    return count


def _record(info: SourceInfo, source: SourceDeclaration,
            pending: tuple[TableInfo, dict[str, object]], pos: Position) -> Record:
    table, raw = pending
    topic = source.topic(source.find_table(table.qualified))  # type: ignore[arg-type]
    return snapshot_record(info, table, topic, raw, pos, int(time.time() * 1000))


def _rows(conn: psycopg.Connection, table: TableInfo) -> Iterator[dict[str, object]]:
    """Every row, as text (the same form pgoutput sends), in chunks through a cursor."""
    names = [c[0] for c in table.columns]
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(n)) for n in names),
        sql.Identifier(table.schema, table.table))
    with conn.cursor(name=f"fhirbus_snapshot_{table.table}") as cur:
        cur.itersize = CHUNK
        cur.execute(query)
        for values in cur:
            yield dict(zip(names, values, strict=True))
