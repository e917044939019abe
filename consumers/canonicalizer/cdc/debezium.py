"""Debezium change events (PostgreSQL connector, JsonConverter) as plain values.

Accepts both JsonConverter forms: the bare payload (``schemas.enable=false``) and the
``{"schema": ..., "payload": ...}`` envelope, for keys and values alike. What the record
is decides what the canonicalizer does with it:

* ``Change`` (op c/u/r/d): a row change to map;
* ``Skip``: a record that carries no row change, skipped on purpose and counted: a delete
  tombstone (null value), a logical-decoding message (op m), a transaction BEGIN/END
  record (``provide.transaction.metadata``).

A truncate (op t) and anything else raise: they are dead-lettered, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .errors import NotAChangeEvent, UnsupportedOperation

Row = dict[str, Any]
ROW_OPS = frozenset({"c", "u", "r", "d"})


@dataclass(frozen=True, slots=True)
class Skip:
    """A record with no row change; ``kind`` names why (the metric label)."""

    kind: str  # tombstone | message | transaction


@dataclass(frozen=True, slots=True)
class Change:
    op: str
    before: Row | None
    after: Row | None
    key: Row | None  # the Kafka key's columns, when the record had a key
    source_name: str  # the CDC source (``cdc.`` prefix of Debezium's server name removed)
    schema: str
    table: str
    lsn: int | None
    tx_id: int | None
    commit_ms: int | None  # source.ts_ms: when the change committed
    seen_ms: int | None  # envelope ts_ms: when the connector read it
    snapshot: bool

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def row(self) -> Row | None:
        """The row state this change leaves (after), or, for a delete, the one it removes."""
        return self.before if self.op == "d" else self.after


def _unwrap(doc: Any) -> Any:
    if isinstance(doc, dict) and "payload" in doc and "schema" in doc and len(doc) == 2:
        return doc["payload"]
    return doc


def decode_key(raw: bytes | None) -> Row | None:
    if not raw:
        return None
    try:
        key = _unwrap(orjson.loads(raw))
    except orjson.JSONDecodeError:
        raise NotAChangeEvent("key", "the record key is not JSON") from None
    return key if isinstance(key, dict) else None


def decode(raw: bytes | None, key: bytes | None = None) -> Change | Skip:
    if not raw:
        return Skip("tombstone")
    try:
        doc = _unwrap(orjson.loads(raw))
    except orjson.JSONDecodeError:
        raise NotAChangeEvent("value", "the record value is not JSON") from None
    if not isinstance(doc, dict):
        raise NotAChangeEvent("value", "the record value is not a JSON object")
    op = doc.get("op")
    if op is None and doc.get("status") in ("BEGIN", "END") and "id" in doc:
        return Skip("transaction")
    if op == "m":
        return Skip("message")
    if op == "t":
        raise UnsupportedOperation("op", "truncate: the removed rows are unknown; reconcile "
                                   "the table's resources (fhirbus reconcile) instead")
    if op not in ROW_OPS:
        raise NotAChangeEvent("op", "missing or unknown op")
    return _change(doc, op, decode_key(key))


def _change(doc: Row, op: str, key: Row | None) -> Change:
    source = doc.get("source")
    if not isinstance(source, dict) or not source.get("table"):
        raise NotAChangeEvent("source", "no source block naming the table")
    before, after = doc.get("before"), doc.get("after")
    if not isinstance(before, dict | None) or not isinstance(after, dict | None):
        raise NotAChangeEvent("before/after", "row images must be JSON objects or null")
    if op != "d" and after is None:
        raise NotAChangeEvent("after", f"op {op} without an after image")
    name = str(source.get("name") or "")
    return Change(
        op=op,
        before=before,
        after=after,
        key=key,
        source_name=name.removeprefix("cdc."),
        schema=str(source.get("schema") or ""),
        table=str(source["table"]),
        lsn=_int(source.get("lsn"), "source.lsn"),
        tx_id=_int(source.get("txId"), "source.txId"),
        commit_ms=_int(source.get("ts_ms"), "source.ts_ms"),
        seen_ms=_int(doc.get("ts_ms"), "ts_ms"),
        snapshot=_snapshot(source.get("snapshot")),
    )


def _int(value: Any, path: str) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and value.isdigit():  # some converters send longs as strings
        return int(value)
    raise NotAChangeEvent(path, "expected an integer")


def _snapshot(value: Any) -> bool:
    """Real events send "true"/"last"/"first"/"incremental"/"false" strings; the docs a bool."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    text = str(value).lower()
    if text in ("false", ""):
        return False
    if text in ("true", "first", "first_in_data_collection", "last", "last_in_data_collection",
                "incremental"):
        return True
    raise NotAChangeEvent("source.snapshot", "unknown snapshot marker")
