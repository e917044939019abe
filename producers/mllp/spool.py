"""The local durable spool: SQLite in WAL mode, ``synchronous=FULL``, one writer thread.

Every operation runs on the writer thread, which takes whatever requests are queued and runs
them in one transaction: one fsync covers all connections waiting at that moment (group
commit), so durability costs one disk flush per batch, not per message. Callers get a
``concurrent.futures.Future`` per request (wrap it with ``asyncio.wrap_future``).

Rows carry an AUTOINCREMENT sequence, so arrival order survives deletes and restarts. The
retransmission window (hashed keys only) lives in the same file, so a spooled message and
the record that it was seen commit together.

The window is written as ``seen_batch`` rows, one per batch of keys (a JSON list), appended
in time order. One key per row in a keyed table (the older ``seen`` table, still read and
pruned in files that have it) dirtied random B-tree pages, about two page writes per
message, and cost the listener as much CPU as its broker client. A batch that only records seen keys
commits without an fsync (``synchronous=NORMAL``: it survives a crash of the process, not
of the machine); losing such an entry can only let a resend through as a duplicate, never
lose a message, and the next durable commit syncs it anyway.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .intake import Headers, Record

log = logging.getLogger(__name__)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
    "kind TEXT NOT NULL, topic TEXT NOT NULL, key BLOB, value BLOB NOT NULL, "
    "headers BLOB NOT NULL, spooled_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS seen_batch (at REAL NOT NULL, n INTEGER NOT NULL, "
    "keys BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS seen_batch_at ON seen_batch (at)",
)
# Spool files written before seen_batch keep their window in this table: read, pruned.
_LEGACY_SEEN = "seen"
# Spooled records the broker refused for good (e.g. too large for the topic): moved here
# with the reason so the forwarder can go on, kept for an operator. Made on first use.
_REFUSED = (
    "CREATE TABLE IF NOT EXISTS refused (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, "
    "topic TEXT NOT NULL, key BLOB, value BLOB NOT NULL, headers BLOB NOT NULL, "
    "spooled_at REAL NOT NULL, refused_at REAL NOT NULL, reason TEXT NOT NULL)"
)
Op = Callable[[sqlite3.Connection], Any]
# A queued request: the operation, its future, and whether its commit must be fsynced.
Request = tuple[Op, Future[Any], bool]


class SpoolError(Exception):
    """The spool could not commit (disk full, I/O error, closed)."""


@dataclass(frozen=True, slots=True)
class Spooled:
    seq: int
    kind: str
    record: Record


@dataclass(frozen=True, slots=True)
class Refused:
    seq: int
    kind: str
    record: Record
    reason: str
    refused_at: float


class Spool:
    def __init__(self, path: Path, *, max_pages: int | None = None, batch_limit: int = 1024):
        self.path = path
        self._max_pages = max_pages
        self._batch_limit = batch_limit
        self._queue: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready: Future[None] = Future()
        self._closed = False

    def start(self) -> None:
        """Open (creating if needed) and start the writer; raises SpoolError if it cannot."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="mllp-spool", daemon=True)
        self._thread.start()
        try:
            self._ready.result(timeout=30)
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot open spool {self.path}: {exc}") from None

    def close(self) -> None:
        if self._thread is None or self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()

    # Requests. Each returns a Future resolved after the transaction holding it committed.
    def append(self, kind: str, record: Record, seen_key: str | None) -> Future[int]:
        return self._submit(lambda c: _insert(c, kind, record, seen_key))

    def remember(self, seen_keys: list[str]) -> Future[None]:
        """Record keys as seen; committed without an fsync unless batched with one."""
        return self._submit(lambda c: _remember_many(c, seen_keys), durable=False)

    def read(self, limit: int) -> Future[list[Spooled]]:
        return self._submit(lambda c: _read(c, limit))

    def delete(self, seqs: list[int]) -> Future[None]:
        rows = [(s,) for s in seqs]
        return self._submit(lambda c: c.executemany("DELETE FROM spool WHERE seq = ?", rows))

    def refuse(self, seq: int, reason: str) -> Future[bool]:
        """Move a spooled row to the refused table, in one commit; False if it is gone."""
        return self._submit(lambda c: _refuse(c, seq, reason))

    def read_refused(self, limit: int = 100) -> Future[list[Refused]]:
        return self._submit(lambda c: _read_refused(c, limit))

    def depth(self) -> Future[int]:
        return self._submit(lambda c: c.execute("SELECT count(*) FROM spool").fetchone()[0])

    def seen_since(self, since: float) -> Future[list[tuple[str, float]]]:
        """(key, when) of every key seen since ``since``, oldest first."""
        return self._submit(lambda c: _seen_since(c, since))

    def prune_seen(self, before: float) -> Future[int]:
        """Forget keys seen before ``before``; returns how many entries went."""
        return self._submit(lambda c: _prune_seen(c, before))

    def _submit(self, op: Op, *, durable: bool = True) -> Future[Any]:
        future: Future[Any] = Future()
        if self._closed:
            future.set_exception(SpoolError("spool is closed"))
        else:
            self._queue.put((op, future, durable))
        return future

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before we ACK from the spool, even after power loss.
        conn.execute("PRAGMA synchronous=FULL")
        if self._max_pages is not None:
            conn.execute(f"PRAGMA max_page_count={int(self._max_pages)}")
        for statement in _SCHEMA:
            conn.execute(statement)
        return conn

    def _run(self) -> None:
        try:
            conn = self._open()
        except sqlite3.Error as exc:
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        synced = True  # synchronous=FULL, as _open set it
        try:
            while True:
                batch = self._take_batch()
                done = batch and batch[-1] is None
                ops = [item for item in batch if item is not None]
                if ops:
                    durable = any(item[2] for item in ops)
                    if durable != synced:
                        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                        synced = durable
                    _run_batch(conn, ops)
                if done:
                    break
        finally:
            conn.close()

    def _take_batch(self) -> list[Request | None]:
        batch = [self._queue.get()]
        while batch[-1] is not None and len(batch) < self._batch_limit:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch


def _run_batch(conn: sqlite3.Connection, ops: list[Request]) -> None:
    """One transaction for the whole batch; every future fails if the commit fails."""
    results: list[Any] = []
    try:
        conn.execute("BEGIN IMMEDIATE")
        results = [op(conn) for op, _, _ in ops]
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        log.error("spool commit failed", extra={"error": str(exc), "batch": len(ops)})
        for _, future, _ in ops:
            future.set_exception(SpoolError(str(exc)))
        return
    for (_, future, _), result in zip(ops, results, strict=True):
        future.set_result(result)


def _insert(conn: sqlite3.Connection, kind: str, record: Record, seen_key: str | None) -> int:
    cur = conn.execute(
        "INSERT INTO spool (kind, topic, key, value, headers, spooled_at) VALUES (?,?,?,?,?,?)",
        (kind, record.topic, record.key, record.value, _pack(record.headers), time.time()),
    )
    if seen_key is not None:
        _remember_many(conn, [seen_key])
    return int(cur.lastrowid or 0)


def _remember_many(conn: sqlite3.Connection, seen_keys: list[str]) -> None:
    # One row, one statement: executemany would step (and release the GIL) once per key.
    conn.execute(
        "INSERT INTO seen_batch (at, n, keys) VALUES (?, ?, ?)",
        (time.time(), len(seen_keys), orjson.dumps(seen_keys)),
    )


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return found.fetchone() is not None


def _seen_since(conn: sqlite3.Connection, since: float) -> list[tuple[str, float]]:
    entries: list[tuple[str, float]] = []
    if _has_table(conn, _LEGACY_SEEN):
        entries = conn.execute("SELECT k, at FROM seen WHERE at >= ?", (since,)).fetchall()
    for at, keys in conn.execute(
        "SELECT at, keys FROM seen_batch WHERE at >= ? ORDER BY at", (since,)
    ):
        entries.extend((k, at) for k in orjson.loads(keys))
    entries.sort(key=lambda e: e[1])  # stable: a batch keeps its order
    return entries


def _prune_seen(conn: sqlite3.Connection, before: float) -> int:
    (batched,) = conn.execute(
        "SELECT coalesce(sum(n), 0) FROM seen_batch WHERE at < ?", (before,)
    ).fetchone()
    conn.execute("DELETE FROM seen_batch WHERE at < ?", (before,))
    keyed = 0
    if _has_table(conn, _LEGACY_SEEN):
        keyed = conn.execute("DELETE FROM seen WHERE at < ?", (before,)).rowcount
    return int(batched) + keyed


def _read(conn: sqlite3.Connection, limit: int) -> list[Spooled]:
    rows = conn.execute(
        "SELECT seq, kind, topic, key, value, headers FROM spool ORDER BY seq LIMIT ?", (limit,)
    ).fetchall()
    return [Spooled(s, kind, Record(t, k, v, _unpack(h))) for s, kind, t, k, v, h in rows]


def _refuse(conn: sqlite3.Connection, seq: int, reason: str) -> bool:
    conn.execute(_REFUSED)
    moved = conn.execute(
        "INSERT INTO refused (seq, kind, topic, key, value, headers, spooled_at, refused_at, "
        "reason) SELECT seq, kind, topic, key, value, headers, spooled_at, ?, ? "
        "FROM spool WHERE seq = ?",
        (time.time(), reason, seq),
    ).rowcount
    conn.execute("DELETE FROM spool WHERE seq = ?", (seq,))
    return moved == 1


def _read_refused(conn: sqlite3.Connection, limit: int) -> list[Refused]:
    if not _has_table(conn, "refused"):
        return []
    rows = conn.execute(
        "SELECT seq, kind, topic, key, value, headers, reason, refused_at FROM refused "
        "ORDER BY seq LIMIT ?",
        (limit,),
    ).fetchall()
    return [
        Refused(s, kind, Record(t, k, v, _unpack(h)), reason, at)
        for s, kind, t, k, v, h, reason, at in rows
    ]


def _pack(headers: Headers) -> bytes:
    # Latin-1 maps bytes 1:1 to code points, so any header value round-trips through JSON.
    return orjson.dumps([[k, v.decode("latin-1")] for k, v in headers])


def _unpack(blob: bytes) -> Headers:
    return [(k, v.encode("latin-1")) for k, v in orjson.loads(blob)]
