"""One store interface over SQLite (stdlib, embedded default) and PostgreSQL (psycopg 3).

Projection code writes SQL once, with ``?`` placeholders and the subset both engines share
(``INSERT ... ON CONFLICT``, ``RETURNING``, ``WITH RECURSIVE``); the PostgreSQL adapter
rewrites placeholders. Everything a projection writes happens inside ``transaction()``, so
read-model rows and the positions that produced them commit together or not at all.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from fhirbus.consumers.errors import DownstreamUnavailable

Row = tuple[Any, ...]
# Rows per multi-row statement: far below SQLite's 32,766 and PostgreSQL's 65,535
# parameters for our widest tables, and few distinct statement texts to prepare.
CHUNK = 200


class Tx(Protocol):
    """An open transaction. SQL uses ``?`` placeholders on every backend."""

    dialect: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


class Store(Protocol):
    dialect: str

    def transaction(self, lock: bool = True) -> contextlib.AbstractContextManager[Tx]: ...

    def close(self) -> None: ...


def greatest(tx: Tx, a: str, b: str) -> str:
    """SQL for the larger of two values (SQLite's scalar max is PostgreSQL's GREATEST)."""
    return f"max({a}, {b})" if tx.dialect == "sqlite" else f"GREATEST({a}, {b})"


def insert_returning(
    tx: Tx, table: str, columns: Sequence[str], types: Sequence[str],
    rows: Sequence[Sequence[Any]], tail: str,
) -> list[Row]:
    """Insert ``rows`` into ``table``; returns what ``tail``'s RETURNING gives.

    One statement tells exactly which rows were new (ON CONFLICT DO NOTHING returns only
    those), which executemany cannot on SQLite. PostgreSQL gets one array per column and
    ``unnest``: a constant statement text, so it is prepared once and reused; SQLite gets
    multi-row VALUES in fixed-size chunks (few distinct texts for its statement cache).
    """
    if not rows:
        return []
    cols = ", ".join(columns)
    if tx.dialect == "postgresql":
        # %b: binary arrays. The text array format escapes every JSON body with a regex,
        # which costs more than the insert itself.
        arrays = ", ".join(f"%b::{t}[]" for t in types)
        sql = f"INSERT INTO {table} ({cols}) SELECT * FROM unnest({arrays}) {tail}"
        return tx.execute(sql, [list(c) for c in zip(*rows, strict=True)])
    out: list[Row] = []
    one = "(" + ", ".join("?" * len(columns)) + ")"
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        sql = f"INSERT INTO {table} ({cols}) VALUES {', '.join([one] * len(chunk))} {tail}"
        out.extend(tx.execute(sql, [v for row in chunk for v in row]))
    return out


def insert_rows(
    tx: Tx, table: str, columns: Sequence[str], types: Sequence[str],
    rows: Sequence[Sequence[Any]], tail: str,
) -> None:
    """Insert (or upsert, per ``tail``'s ON CONFLICT) ``rows`` into ``table``.

    PostgreSQL: one ``unnest`` statement of binary arrays, as insert_returning. A pipelined
    executemany still binds and executes one statement per row, which made billing's
    ledger (one or two rows per event, recomputed per charge) the slowest model there.
    The statement must not touch one row twice (``DO UPDATE`` refuses): callers pass one
    row per key, or ``DO NOTHING``. SQLite: executemany, in-process and cheap.
    """
    if not rows:
        return
    cols = ", ".join(columns)
    if tx.dialect == "postgresql":
        arrays = ", ".join(f"%b::{t}[]" for t in types)
        sql = f"INSERT INTO {table} ({cols}) SELECT * FROM unnest({arrays}) {tail}"
        tx.execute(sql, [list(c) for c in zip(*rows, strict=True)])
        return
    marks = ", ".join("?" * len(columns))
    tx.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks}) {tail}", rows)


def select_in(
    tx: Tx, sql: str, values: Sequence[Any], params: Sequence[Any] = ()
) -> list[Row]:
    """Run ``sql`` whose ``IN ({in})`` is a list of ``values`` (``= ANY(array)`` on
    PostgreSQL: one prepared statement whatever the count)."""
    if not values:
        return []
    if tx.dialect == "postgresql":
        return tx.execute(sql.replace("IN ({in})", "= ANY(?)"), [*params, list(values)])
    out: list[Row] = []
    for start in range(0, len(values), CHUNK * 2):
        chunk = values[start : start + CHUNK * 2]
        marks = ", ".join("?" * len(chunk))
        out.extend(tx.execute(sql.replace("{in}", marks), [*params, *chunk]))
    return out


# -- SQLite -------------------------------------------------------------------------------
class _SqliteTx:
    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._conn.execute(sql, params).fetchall()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._conn.executemany(sql, rows)


class SqliteStore:
    """One connection, WAL journal. ``synchronous=NORMAL`` survives a process kill (the
    case exactly-once must handle); a power loss may drop the last transactions, rows and
    positions together, which only means redelivery. ``durable`` asks for FULL."""

    dialect = "sqlite"

    def __init__(self, path: str | Path, durable: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def transaction(self, lock: bool = True) -> Iterator[Tx]:
        # IMMEDIATE takes the write lock up front: two writers never deadlock upgrading
        # read locks, and a generation swap is serialized against every batch.
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE" if lock else "BEGIN")
            try:
                yield _SqliteTx(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()


# -- PostgreSQL ---------------------------------------------------------------------------
class _PgTx:
    dialect = "postgresql"

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cur = self._conn.execute(_pg(sql), params or None, prepare=True)
        return cur.fetchall() if cur.description else []

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self._conn.cursor() as cur:
                cur.executemany(_pg(sql), rows)  # pipelined: one round trip per batch


_PG_SQL: dict[str, str] = {}


def _pg(sql: str) -> str:
    """``?`` -> ``%s``. Our SQL has no literal ``?`` and no ``%`` but the ``%b`` (binary
    parameter) that insert_returning writes itself; cached per statement text."""
    out = _PG_SQL.get(sql)
    if out is None:
        out = _PG_SQL[sql] = sql.replace("?", "%s")
    return out


class StoreUnavailable(DownstreamUnavailable):
    """The read-model database cannot be reached. To the runtime an outage (it waits and
    retries the batch, dead-letters nothing); at start ``fhirbus project`` prints it and
    exits. The text names the host, never the DSN's password."""


# libpq defaults wait for the OS: a server that vanishes without a reset (a failover that
# moves its address, a dropped route) would hold a batch for the kernel's TCP timeout,
# minutes, before the runtime could reconnect. These notice it in about half a minute. A
# DSN that sets any of them keeps its own value.
_LIVENESS = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "15",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",  # ms: unacknowledged data, e.g. a COMMIT sent into the void
}


def _liveness(dsn: str) -> dict[str, str]:
    from psycopg.conninfo import conninfo_to_dict

    given = conninfo_to_dict(dsn)
    return {k: v for k, v in _LIVENESS.items() if k not in given}


class PostgresStore:
    """One psycopg connection, reopened after a failure (the runtime retries the batch).

    Commits do not wait for the WAL flush (``synchronous_commit=off`` for this session
    only) unless ``durable``: as with SQLite's NORMAL, a crash of the server may lose the
    last commits, rows and positions together and never one without the other, so the
    projection applies them again from Kafka. It saves a WAL flush per batch."""

    dialect = "postgresql"

    def __init__(self, dsn: str, durable: bool = False) -> None:
        self.dsn = dsn
        self.durable = durable
        self._conn: Any = None
        self._lock = threading.Lock()

    def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                conn = psycopg.connect(self.dsn, autocommit=True, **_liveness(self.dsn))
            except psycopg.OperationalError as exc:
                # libpq's first line says why (refused, auth, unknown database) and names
                # host and port, not the password the DSN may carry.
                why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise StoreUnavailable(
                    f"cannot connect to PostgreSQL at {describe(self.dsn)}: {why}") from exc
            if not self.durable:
                conn.execute("SET synchronous_commit = off")
            conn.autocommit = False
            self._conn = conn
        return self._conn

    @contextlib.contextmanager
    def transaction(self, lock: bool = True) -> Iterator[Tx]:
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                yield _PgTx(conn)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def open_store(dsn: str, durable: bool = False) -> Store:
    """``sqlite:///abs/path.db``, ``sqlite:relative.db``, a plain path, or a PostgreSQL
    URI / conninfo (``postgresql://user@host/db``)."""
    if dsn.startswith(("postgresql://", "postgres://")) or "dbname=" in dsn:
        return PostgresStore(dsn, durable)
    if dsn.startswith("sqlite:"):
        parsed = urlparse(dsn)
        path = parsed.path if dsn.startswith("sqlite://") else dsn[len("sqlite:") :]
        return SqliteStore(path, durable)
    return SqliteStore(dsn, durable)


def describe(dsn: str) -> str:
    """The DSN without credentials, for logs and status output."""
    if dsn.startswith(("postgresql://", "postgres://")):
        p = urlparse(dsn)
        return f"postgresql://{p.hostname or ''}{':' + str(p.port) if p.port else ''}{p.path}"
    if "dbname=" in dsn:  # conninfo (``host=... password=...``): keep where, drop who
        from psycopg.conninfo import conninfo_to_dict

        c = conninfo_to_dict(dsn)
        port = f":{c['port']}" if c.get("port") else ""
        return f"postgresql://{c.get('host', '')}{port}/{c.get('dbname', '')}"
    return dsn
