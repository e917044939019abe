"""Slot output -> committed transactions, for the two output plugins the reader supports.

Input is what ``pg_logical_slot_peek_(binary_)changes`` returns: ``(lsn, xid, data)`` rows.
The SQL ``lsn`` of a commit row is the end of the commit record, which is where the slot may
be advanced once the transaction is published. Both decoders are plain functions of their
input (pgoutput keeps the relation messages it has seen), tested without a database.

- wal2json, ``format-version 2``: one JSON object per row; ``B``/``C`` bracket a transaction;
  ``I``/``U``/``D`` carry ``columns`` (new tuple) and ``identity`` (old key, or the whole old
  row under REPLICA IDENTITY FULL). An unchanged TOASTed column is left out of ``columns``.
- pgoutput, protocol version 1 (the plugin Debezium uses): binary messages ``B``, ``R``
  (relation), ``I``, ``U``, ``D``, ``C``; tuple columns are ``n`` (null), ``u`` (unchanged
  TOAST) or ``t`` (text).

Truncate, logical messages, origins and types are skipped: a truncate has no per-key
meaning (documented in connectors/docs/cdc.md).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from datetime import UTC, datetime

import orjson

from .changes import UNCHANGED_TOAST, Change, DecodeError, Transaction

Row = tuple[int, int | None, str | bytes]  # (lsn, xid, data)
_PG_EPOCH_US = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000


class Wal2JsonDecoder:
    plugin = "wal2json"

    def decode(self, rows: Iterable[Row]) -> list[Transaction]:
        done: list[Transaction] = []
        current: Transaction | None = None
        for lsn, xid, data in rows:
            msg = orjson.loads(data)
            action = msg.get("action")
            if action == "B":
                current = Transaction(xid=int(msg.get("xid", xid or 0)),
                                      commit_ts_ms=_w2j_ts(msg.get("timestamp")))
            elif action == "C":
                if current is None:
                    raise DecodeError("wal2json commit without begin")
                current.end_lsn = lsn
                done.append(current)
                current = None
            elif action in ("I", "U", "D"):
                if current is None:
                    raise DecodeError("wal2json change outside a transaction")
                current.changes.append(_w2j_change(action, msg, lsn))
        return done


def _w2j_columns(items: list[dict[str, object]] | None) -> dict[str, object] | None:
    if items is None:
        return None
    return {str(c["name"]): c.get("value") for c in items}


def _w2j_change(action: str, msg: dict[str, object], lsn: int) -> Change:
    op = {"I": "c", "U": "u", "D": "d"}[action]
    new = _w2j_columns(msg.get("columns"))  # type: ignore[arg-type]
    old = _w2j_columns(msg.get("identity"))  # type: ignore[arg-type]
    return Change(op, str(msg["schema"]), str(msg["table"]),  # type: ignore[arg-type]
                  None if op == "d" else (new or {}), old, lsn)


def _w2j_ts(text: object) -> int:
    if not isinstance(text, str):
        return 0
    return int(datetime.fromisoformat(text).timestamp() * 1000)


class PgoutputDecoder:
    plugin = "pgoutput"

    def __init__(self) -> None:
        # relation id -> (schema, table, column names, key column names); pgoutput sends R
        # before a relation's first change in every decoding session
        self.relations: dict[int, tuple[str, str, tuple[str, ...], frozenset[str]]] = {}

    def decode(self, rows: Iterable[Row]) -> list[Transaction]:
        done: list[Transaction] = []
        current: Transaction | None = None
        for lsn, _xid, data in rows:
            buf = bytes(data) if not isinstance(data, bytes) else data
            kind = buf[:1]
            if kind == b"B":
                _final, ts, xid = struct.unpack_from(">qqI", buf, 1)
                current = Transaction(xid=xid, commit_ts_ms=(ts + _PG_EPOCH_US) // 1000)
            elif kind == b"C":
                if current is None:
                    raise DecodeError("pgoutput commit without begin")
                current.end_lsn = lsn
                done.append(current)
                current = None
            elif kind == b"R":
                self._relation(buf)
            elif kind in (b"I", b"U", b"D"):
                if current is None:
                    raise DecodeError("pgoutput change outside a transaction")
                current.changes.append(self._change(kind, buf, lsn))
        return done

    def _relation(self, buf: bytes) -> None:
        (relid,) = struct.unpack_from(">I", buf, 1)
        schema, pos = _cstring(buf, 5)
        table, pos = _cstring(buf, pos)
        pos += 1  # replica identity setting
        (ncols,) = struct.unpack_from(">h", buf, pos)
        pos += 2
        names, keys = [], set()
        for _ in range(ncols):
            flags = buf[pos]
            name, pos = _cstring(buf, pos + 1)
            names.append(name)
            if flags & 1:
                keys.add(name)
            pos += 8  # type oid, type modifier: types come from the catalog
        self.relations[relid] = (schema, table, tuple(names), frozenset(keys))

    def _change(self, kind: bytes, buf: bytes, lsn: int) -> Change:
        (relid,) = struct.unpack_from(">I", buf, 1)
        if relid not in self.relations:
            raise DecodeError(f"pgoutput change for unknown relation {relid}")
        schema, table, names, keys = self.relations[relid]
        pos, old, new = 5, None, None
        if buf[pos:pos + 1] in (b"K", b"O"):
            full = buf[pos:pos + 1] == b"O"
            old, pos = _tuple(buf, pos + 1, names)
            if not full:  # a key-only old tuple sends the other columns as null: drop them
                old = {k: v for k, v in old.items() if k in keys}
        if buf[pos:pos + 1] == b"N":
            new, pos = _tuple(buf, pos + 1, names)
        op = {b"I": "c", b"U": "u", b"D": "d"}[kind]
        return Change(op, schema, table, new, old, lsn)  # type: ignore[arg-type]


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(b"\x00", pos)
    return buf[pos:end].decode("utf-8"), end + 1


def _tuple(buf: bytes, pos: int, names: tuple[str, ...]) -> tuple[dict[str, object], int]:
    (ncols,) = struct.unpack_from(">h", buf, pos)
    pos += 2
    values: dict[str, object] = {}
    for i in range(ncols):
        kind = buf[pos:pos + 1]
        pos += 1
        if kind == b"n":
            values[names[i]] = None
        elif kind == b"u":
            values[names[i]] = UNCHANGED_TOAST
        elif kind == b"t":
            (length,) = struct.unpack_from(">i", buf, pos)
            values[names[i]] = buf[pos + 4:pos + 4 + length].decode("utf-8")
            pos += 4 + length
        else:
            raise DecodeError(f"pgoutput tuple column kind {kind!r} not supported")
    return values, pos
