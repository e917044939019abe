"""The source database's side: table definitions, the slot and the publication.

Everything here is a small SQL call; the decisions (which plugin, whether to snapshot) are
made by the reader. A table that cannot be captured faithfully is refused at start with a
message that says what to change, rather than published with missing keys later.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from fhirbus.connectors.sources import SourceDeclaration, TableDeclaration
from fhirbus.settings import ConfigError

from .events import TableInfo

_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum"""
_PRIMARY_KEY = """
SELECT a.attname
FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
WHERE i.indrelid = %s::regclass AND i.indisprimary
ORDER BY array_position(i.indkey::int2[], a.attnum)"""


# Text output the converters understand, whatever the server's defaults: ISO dates, UTC,
# floats that round-trip.
_SESSION = "-c TimeZone=UTC -c DateStyle=ISO,YMD -c extra_float_digits=3"


def connect(dsn: str, *, autocommit: bool = True, replication: bool = False
            ) -> psycopg.Connection:
    params = conninfo_to_dict(dsn)
    params["options"] = f"{params.get('options') or ''} {_SESSION}".strip()
    params.setdefault("connect_timeout", 10)
    params.setdefault("application_name", "fhirbus-cdc")
    if replication:
        params["replication"] = "database"
    return psycopg.connect(autocommit=autocommit, **params)


def load_table(conn: psycopg.Connection, decl: TableDeclaration) -> TableInfo:
    name = decl.qualified
    found = conn.execute("SELECT to_regclass(%s), relreplident FROM pg_class "
                         "WHERE oid = to_regclass(%s)", (name, name)).fetchone()
    if found is None:
        raise ConfigError(f"CDC table {name} does not exist in the source database: create "
                          "it, or remove it from the sources file")
    columns = tuple(conn.execute(_COLUMNS, (name,)).fetchall())
    primary = tuple(r[0] for r in conn.execute(_PRIMARY_KEY, (name,)).fetchall())
    replica_full = found[1] == "f"
    key = decl.key_columns or primary
    if not key:
        raise ConfigError(
            f"CDC table {name} has no primary key: declare key_columns for it in the sources "
            "file (and ALTER TABLE ... REPLICA IDENTITY FULL), or stop capturing it")
    unknown = [k for k in key if k not in {c[0] for c in columns}]
    if unknown:
        raise ConfigError(f"CDC table {name}: key_columns {unknown} are not columns of it")
    if decl.key_columns and tuple(decl.key_columns) != primary and not replica_full:
        # Without the whole old row in the WAL, updates and deletes would carry no value
        # for the declared key (and pgoutput makes them fail in the source database).
        raise ConfigError(
            f"CDC table {name} is keyed by declared key_columns, which needs the whole old "
            f"row in the WAL: run ALTER TABLE {name} REPLICA IDENTITY FULL")
    return TableInfo(decl.schema_name, decl.table, columns, tuple(key), replica_full)


@dataclass(frozen=True, slots=True)
class SlotState:
    plugin: str
    confirmed_lsn: int | None
    restart_lsn: int | None
    active: bool


def slot_state(conn: psycopg.Connection, slot: str) -> SlotState | None:
    row = conn.execute(
        "SELECT plugin, (confirmed_flush_lsn - '0/0')::bigint, (restart_lsn - '0/0')::bigint,"
        " active FROM pg_replication_slots WHERE slot_name = %s AND database = "
        "current_database()", (slot,)).fetchone()
    return None if row is None else SlotState(row[0], row[1], row[2], row[3])


def plugin_allowed(conn: psycopg.Connection, plugin: str) -> bool:
    """Some PostgreSQL builds restrict output plugins (``output_plugin_libraries``); stock
    PostgreSQL has no such setting and allows any installed plugin."""
    allowed = conn.execute("SELECT current_setting('output_plugin_libraries', true)").fetchone()
    if allowed is None or allowed[0] is None:
        return True
    return plugin in {p.strip() for p in allowed[0].split(",")}


def ensure_publication(conn: psycopg.Connection, source: SourceDeclaration) -> None:
    """pgoutput needs a publication; it is created (or completed) for the declared tables."""
    have = {f"{r[0]}.{r[1]}" for r in conn.execute(
        "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
        (source.publication,)).fetchall()}
    exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s",
                          (source.publication,)).fetchone()
    missing = [t for t in source.tables if t.qualified not in have]
    if exists and not missing:
        return
    tables = sql.SQL(", ").join(sql.Identifier(t.schema_name, t.table) for t in missing)
    verb = "ALTER PUBLICATION {} ADD TABLE {}" if exists else "CREATE PUBLICATION {} FOR TABLE {}"
    conn.execute(sql.SQL(verb).format(sql.Identifier(source.publication), tables))


def drop_slot(conn: psycopg.Connection, slot: str) -> None:
    conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                 "WHERE slot_name = %s", (slot,))


def create_slot(conn: psycopg.Connection, slot: str, plugin: str) -> int:
    row = conn.execute("SELECT (lsn - '0/0')::bigint FROM "
                       "pg_create_logical_replication_slot(%s, %s)", (slot, plugin)).fetchone()
    assert row is not None
    return int(row[0])


def advance_slot(conn: psycopg.Connection, slot: str, lsn: int) -> None:
    conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (slot, _lsn_text(lsn)))


def flush_lsn(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT (pg_current_wal_flush_lsn() - '0/0')::bigint").fetchone()
    assert row is not None
    return int(row[0])


def _lsn_text(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def peek_options(source: SourceDeclaration, plugin: str) -> list[str]:
    if plugin == "pgoutput":
        return ["proto_version", "1", "publication_names", source.publication]
    tables = ",".join(t.qualified for t in source.tables)
    return ["format-version", "2", "include-lsn", "true", "include-xids", "true",
            "include-timestamp", "true", "include-transaction", "true",
            "numeric-data-types-as-string", "true", "add-tables", tables]


def peek(conn: psycopg.Connection, slot: str, plugin: str, options: list[str],
         max_changes: int, upto_lsn: int | None = None) -> list[tuple[int, int, str | bytes]]:
    """Whole transactions after the slot's confirmed LSN; ``max_changes`` is a soft limit
    (PostgreSQL finishes the transaction it is in). Peeking does not move the slot."""
    func = "pg_logical_slot_peek_binary_changes" if plugin == "pgoutput" else \
        "pg_logical_slot_peek_changes"
    query = sql.SQL("SELECT (lsn - '0/0')::bigint, xid::text::bigint, data FROM {}"
                    "(%s, %s::pg_lsn, %s, VARIADIC %s::text[])").format(sql.Identifier(func))
    upto = None if upto_lsn is None else _lsn_text(upto_lsn)
    return conn.execute(query, (slot, upto, max_changes, options)).fetchall()  # type: ignore[return-value]
