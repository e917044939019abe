"""Debezium-format change events: the one event shape both CDC paths publish.

Conventions (the Debezium PostgreSQL connector with ``JsonConverter`` and
``schemas.enable=false``, ``decimal.handling.mode=string``; ``connectors/debezium`` configures
Debezium to match, so a consumer cannot tell which path produced an event):

- topic ``cdc.<source>.<schema>.<table>``; Kafka key = JSON object of the key columns,
  e.g. ``{"id": 5}`` (the primary key, or the declared ``key_columns``).
- value = ``{"before", "after", "source", "op", "ts_ms", "transaction": null}`` with ``op``
  ``c`` (insert), ``u`` (update), ``d`` (delete) or ``r`` (snapshot read); ``ts_ms`` is when
  the reader built the event.
- ``source`` = ``{"version", "connector": "postgresql", "name": "cdc.<source>", "ts_ms"``
  (commit time, ms)``, "snapshot"`` (``"true"``, ``"last"`` for the final snapshot row,
  ``"false"``)``, "db", "sequence"`` (JSON text ``["<previous commit lsn>", "<lsn>"]``)``,
  "schema", "table", "txId", "lsn"`` (integer)``, "xmin": null}``.
- values: integers, booleans, text as JSON natives; numeric -> string (``"12.5000"``);
  float -> number; date -> days since 1970-01-01 (io.debezium.time.Date); timestamptz ->
  ISO-8601 UTC string ``...Z`` (ZonedTimestamp); timestamp -> microseconds since the epoch
  (MicroTimestamp); time -> microseconds since midnight (MicroTime); bytea -> base64;
  json/jsonb, uuid and anything else -> PostgreSQL's text form.
- a delete is an event with ``after: null`` followed by a tombstone (same key, value null).
  An update that changes the key is a delete (+ tombstone) of the old key, then a create.
- an unchanged TOASTed column that the old tuple does not carry (REPLICA IDENTITY DEFAULT)
  is ``"__debezium_unavailable_value"``: the value was not changed and is not known here.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

import orjson

from fhirbus import __version__

from .changes import UNCHANGED_TOAST, Change, RawValue

UNAVAILABLE = "__debezium_unavailable_value"
VERSION = f"fhirbus-{__version__}"
_EPOCH_DAY = date(1970, 1, 1).toordinal()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class TableInfo:
    schema: str
    table: str
    columns: tuple[tuple[str, str], ...]  # (name, format_type name) in table order
    key: tuple[str, ...]
    replica_full: bool = False

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True, slots=True)
class SourceInfo:
    name: str  # the declared source; Debezium's topic.prefix is cdc.<name>
    db: str


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record to publish."""

    topic: str
    key: bytes
    value: bytes | None
    lsn: int
    xid: int


def _int(raw: RawValue) -> int:
    return raw if isinstance(raw, int) else int(str(raw))


def _bool(raw: RawValue) -> bool:
    return raw if isinstance(raw, bool) else raw in ("t", "true")


def _float(raw: RawValue) -> float:
    return float(raw)  # type: ignore[arg-type]


def _date(raw: RawValue) -> int | str:
    try:
        return date.fromisoformat(str(raw)).toordinal() - _EPOCH_DAY
    except ValueError:
        return str(raw)  # infinity, BC dates: kept as PostgreSQL wrote them


def _parse_ts(raw: RawValue) -> datetime | None:
    try:  # Python 3.11 reads PostgreSQL's ISO output, "+00" offsets included
        return datetime.fromisoformat(str(raw))
    except ValueError:
        return None


def _timestamptz(raw: RawValue) -> str:
    parsed = _parse_ts(raw)
    if parsed is None:
        return str(raw)
    return parsed.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _timestamp(raw: RawValue) -> int | str:
    parsed = _parse_ts(raw)
    if parsed is None:
        return str(raw)
    delta = parsed.replace(tzinfo=UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _time(raw: RawValue) -> int | str:
    try:
        t = time.fromisoformat(str(raw))
    except ValueError:
        return str(raw)
    return ((t.hour * 60 + t.minute) * 60 + t.second) * 1_000_000 + t.microsecond


def _bytea(raw: RawValue) -> str:
    text = str(raw)
    data = bytes.fromhex(text[2:]) if text.startswith("\\x") else text.encode()
    return base64.b64encode(data).decode("ascii")


_CONVERTERS: dict[str, Callable[[RawValue], object]] = {
    "smallint": _int, "integer": _int, "bigint": _int, "oid": _int,
    "boolean": _bool,
    "numeric": str,
    "real": _float, "double precision": _float,
    "date": _date,
    "timestamp with time zone": _timestamptz,
    "timestamp without time zone": _timestamp,
    "time without time zone": _time,
    "bytea": _bytea,
}


def base_type(type_name: str) -> str:
    """``numeric(12,4)`` -> ``numeric``; arrays keep their ``[]`` (sent as text)."""
    head, sep, _rest = type_name.partition("(")
    if not sep:
        return type_name
    return head + ("[]" if type_name.endswith("[]") else "")


def debezium_value(type_name: str, raw: object) -> object:
    if raw is None:
        return None
    if raw is UNCHANGED_TOAST:
        return UNAVAILABLE
    convert = _CONVERTERS.get(base_type(type_name))
    if convert is None:
        return raw if isinstance(raw, str) else str(raw)
    return convert(raw)  # type: ignore[arg-type]


def row_image(table: TableInfo, values: dict[str, object], fallback: dict[str, object] | None
              ) -> dict[str, object]:
    """A full row in table column order. A column the tuple lacks (an unchanged TOASTed
    value) comes from ``fallback`` (the old row, under REPLICA IDENTITY FULL) when that
    holds it, else it is Debezium's unavailable-value placeholder."""
    out: dict[str, object] = {}
    for name, type_name in table.columns:
        raw = values.get(name, UNCHANGED_TOAST)
        if raw is UNCHANGED_TOAST and fallback is not None:
            raw = fallback.get(name, UNCHANGED_TOAST)
        out[name] = debezium_value(type_name, raw)
    return out


def key_of(table: TableInfo, row: dict[str, object]) -> bytes:
    return orjson.dumps({k: row.get(k) for k in table.key})


def _old_image(table: TableInfo, old: dict[str, object]) -> dict[str, object]:
    """Debezium's ``before``: the whole old row under REPLICA IDENTITY FULL; under DEFAULT
    the old tuple carries only the key, and the other columns are null."""
    image = row_image(table, old, None)
    for name in image:
        if name not in old:
            image[name] = None
    return image


@dataclass(frozen=True, slots=True)
class Position:
    """Where an event comes from in the source's history."""

    lsn: int
    xid: int
    commit_ts_ms: int
    snapshot: str = "false"  # "true" | "last" | "false", strings as Debezium writes them
    prev_commit_lsn: int | None = None


def envelope(source: SourceInfo, table: TableInfo, op: str, before: dict[str, object] | None,
             after: dict[str, object] | None, pos: Position, now_ms: int) -> bytes:
    prev = None if pos.prev_commit_lsn is None else str(pos.prev_commit_lsn)
    return orjson.dumps({
        "before": before,
        "after": after,
        "source": {
            "version": VERSION, "connector": "postgresql", "name": f"cdc.{source.name}",
            "ts_ms": pos.commit_ts_ms, "snapshot": pos.snapshot, "db": source.db,
            "sequence": orjson.dumps([prev, str(pos.lsn)]).decode(),
            "schema": table.schema, "table": table.table, "txId": pos.xid, "lsn": pos.lsn,
            "xmin": None,
        },
        "op": op,
        "ts_ms": now_ms,
        "transaction": None,
    })


def change_records(source: SourceInfo, table: TableInfo, topic: str, change: Change,
                   pos: Position, now_ms: int) -> list[Record]:
    """The records one row change becomes, in the order they must be published."""
    def record(op: str, before: dict[str, object] | None, after: dict[str, object] | None
               ) -> Record:
        key = key_of(table, after if after is not None else before or {})
        value = envelope(source, table, op, before, after, pos, now_ms)
        return Record(topic, key, value, pos.lsn, pos.xid)

    def delete(before: dict[str, object]) -> list[Record]:
        gone = record("d", before, None)
        return [gone, Record(topic, gone.key, None, pos.lsn, pos.xid)]

    if change.op == "c":
        return [record("c", None, row_image(table, change.new or {}, None))]
    if change.op == "d":
        if change.old is None:
            raise ValueError(f"delete on {table.qualified} without an old key")
        return delete(_old_image(table, change.old))
    # An unchanged TOASTed column is not in the new tuple; the old one has it under FULL.
    after = row_image(table, change.new or {}, change.old)
    before = _old_image(table, change.old) if change.old is not None else None
    if before is not None and key_of(table, before) != key_of(table, after):
        return [*delete(before), record("c", None, after)]
    return [record("u", before, after)]


def snapshot_record(source: SourceInfo, table: TableInfo, topic: str, raw: dict[str, object],
                    pos: Position, now_ms: int) -> Record:
    after = row_image(table, raw, None)
    value = envelope(source, table, "r", None, after, pos, now_ms)
    return Record(topic, key_of(table, after), value, pos.lsn, pos.xid)
