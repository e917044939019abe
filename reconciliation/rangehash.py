"""Range-hash comparison of two SQL relations (a CDC source table and a projection table).

Each side is a relation with SQL expressions for its key, version and compared fields.
Both sides are reduced to per-bucket ``(rows, sum of row hashes)``, a bucket being a
prefix of the key (resource ids are UUID hex, so prefixes spread evenly), and rows are
fetched only from buckets that differ, then compared key by key (``diff.classify``).

A side whose key SQL can compute (a projection: the resource id is a column) is
summarised *in the database* (PostgreSQL: md5 in SQL; SQLite: the same formula as a
registered function), so only bucket summaries cross the wire. A side whose key SQL
cannot compute (a CDC row's resource id is a UUIDv5 of its primary key) gives a Python
``key_of`` and is streamed exactly once: ids and row hashes are computed in Python, and
each bucket remembers only the raw keys of its rows (an ``array('q')`` for integer keys),
so the row-level diff re-fetches just the rows of differing buckets by key.
"""

from __future__ import annotations

import sqlite3
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlparse

import orjson

from . import diff

KeyOf = Callable[[Any], str]
BATCH = 20_000


@dataclass(frozen=True)
class Side:
    relation: str
    key: str
    version: str
    fields: str
    where: str = "1 = 1"
    key_of: KeyOf | None = None  # Python key from the raw SQL key (None: the SQL key is it)


class Reader(Protocol):
    dialect: str

    def batches(self, sql: str, params: Sequence[Any] = ()) -> Iterator[list[tuple[Any, ...]]]:
        ...

    def close(self) -> None: ...


def query(reader: Reader, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
    for batch in reader.batches(sql, params):
        yield from batch


class SqliteReader:
    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)

    def batches(self, sql: str, params: Sequence[Any] = ()) -> Iterator[list[tuple[Any, ...]]]:
        cur = self.conn.execute(sql.replace("%s", "?"), params)
        while batch := cur.fetchmany(BATCH):
            yield batch

    def close(self) -> None:
        self.conn.close()


class PgReader:
    dialect = "postgresql"

    def __init__(self, dsn: str) -> None:
        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=True)

    def batches(self, sql: str, params: Sequence[Any] = ()) -> Iterator[list[tuple[Any, ...]]]:
        # A server-side cursor: a million rows stream in chunks, never all in memory.
        with self.conn.transaction(), self.conn.cursor(name="fhirbus_reconcile") as cur:
            cur.execute(sql, params or None)
            while batch := cur.fetchmany(BATCH):
                yield batch

    def close(self) -> None:
        self.conn.close()


def open_reader(dsn: str) -> Reader:
    if dsn.startswith(("postgresql://", "postgres://")) or "dbname=" in dsn:
        return PgReader(dsn)
    if dsn.startswith("sqlite://"):
        return SqliteReader(urlparse(dsn).path)
    return SqliteReader(dsn[len("sqlite:"):] if dsn.startswith("sqlite:") else dsn)


def _inner(side: Side) -> str:
    # A Python-keyed side hands key_of the raw key (an int stays an int, for array('q')).
    key = side.key if side.key_of else f"CAST(({side.key}) AS TEXT)"
    return (f"SELECT {key} AS k, {side.version} AS v, {side.fields} AS f "
            f"FROM {side.relation} WHERE {side.where}")


def count_rows(reader: Reader, side: Side) -> int:
    return int(next(query(reader, f"SELECT count(*) FROM {side.relation} WHERE {side.where}"))[0])


def stream(reader: Reader, side: Side) -> Iterator[tuple[str, int, str | None]]:
    """(key, version, fields) of every row, keys through ``key_of`` when set."""
    key_of = side.key_of
    for batch in reader.batches(_inner(side)):
        for k, v, f in batch:
            yield (key_of(k) if key_of else k), int(v), f


@dataclass
class Summary:
    """Per-bucket (rows, sum of row hashes); for a streamed side also each bucket's raw keys."""

    sums: diff.BucketSums
    keys: dict[int, array[int] | list[Any]] | None = None

    @property
    def rows(self) -> int:
        return sum(c for c, _ in self.sums.values())


def summarise(reader: Reader, side: Side, prefix_len: int) -> Summary:
    """One pass over the side's rows: per-bucket count and sum of ``diff.row_hash``."""
    if side.key_of is not None:
        return _summarise_keyed(reader, side, prefix_len)
    sums: dict[int, list[int]] = {}
    for batch in reader.batches(_inner(side)):
        for k, v, f in batch:
            acc = sums.get(b := int(k[:prefix_len], 16))
            if acc is None:
                acc = sums[b] = [0, 0]
            acc[0] += 1
            acc[1] += hash((int(v), f or "")) ^ int(k[24:34], 16)  # diff.row_hash, inlined
    return Summary({b: (c, h) for b, (c, h) in sums.items()})


def _digest_of(key_of: KeyOf) -> Callable[[Any], bytes]:
    """Bytes whose 0-3 and 10-14 are the key's hex digits 1-8 and 25-34 (``diff.bucket_of``
    and ``diff.key_bits``): the raw SHA-1 when key_of offers it (``ids.StableIds``)."""
    digest = getattr(key_of, "digest", None)
    if digest is not None:
        return digest  # type: ignore[no-any-return]
    return lambda k: bytes.fromhex(key_of(k).replace("-", ""))


def _summarise_keyed(reader: Reader, side: Side, n: int) -> Summary:
    """The side whose key only Python computes (a SHA-1 per row, not formatted as a UUID):
    each bucket also remembers the raw keys of its rows, to re-read them by key later."""
    assert side.key_of is not None
    digest, from_bytes, shift = _digest_of(side.key_of), int.from_bytes, 120 - 4 * n
    sums: dict[int, int] = {}
    keys: dict[int, Any] = {}
    for batch in reader.batches(_inner(side)):
        for k, v, f in batch:
            bits = from_bytes(digest(k)[:15], "big")
            got = keys.get(b := bits >> shift)
            if got is None:
                sums[b], got = 0, keys.setdefault(b, array("q") if type(k) is int else [])
            sums[b] += hash((int(v), f or "")) ^ (bits & 0xFF_FFFF_FFFF)  # diff.row_hash
            got.append(k)
    return Summary({b: (len(keys[b]), s) for b, s in sums.items()}, keys)


def rows_in(reader: Reader, side: Side, summary: Summary, prefix_len: int,
            wanted: Sequence[int]) -> dict[str, diff.Fingerprint]:
    """Fingerprints of the rows in the ``wanted`` buckets only: by the raw keys the
    summary remembered, else by the bucket in SQL."""
    if not wanted:
        return {}
    if summary.keys is not None:
        raw = [k for b in wanted for k in summary.keys.get(b, ())]
        return {k: (int(v), diff.fields_digest(f)) for k, v, f in by_keys(reader, side, raw)}
    prefixes = [f"{b:0{prefix_len}x}" for b in wanted]
    if reader.dialect == "sqlite":
        # A key range per prefix walks the key's index ('g' sorts after every hex digit and
        # '-'); the substr test alone decides membership, whatever the column's collation.
        rows = (f"SELECT {side.key} AS k, {side.version} AS v, {side.fields} AS f "
                f"FROM {side.relation} WHERE {side.where}")
        sql = (f"WITH p(x) AS (SELECT value FROM json_each(?)) SELECT k, v, f FROM p "
               f"JOIN ({rows}) AS s ON s.k >= p.x AND s.k < p.x || 'g' "
               "AND substr(s.k, 1, ?) = p.x")
        params: list[Any] = [orjson.dumps(prefixes).decode(), prefix_len]
    else:
        sql = f"SELECT k, v, f FROM ({_inner(side)}) AS s WHERE substr(k, 1, %s) = ANY(%s)"
        params = [prefix_len, prefixes]
    return {k: (int(v), diff.fields_digest(f)) for k, v, f in query(reader, sql, params)}


def by_keys(reader: Reader, side: Side, raw: Sequence[Any],
            columns: str | None = None) -> Iterator[tuple[Any, ...]]:
    """Rows of a streamed side by raw key, ``(key_of(key), *columns)``; the default columns
    are (version, fields). A single-column key uses its index."""
    assert side.key_of is not None
    cols = columns or f"{side.version}, {side.fields}"
    if reader.dialect == "sqlite":
        sql = (f"SELECT {side.key}, {cols} FROM {side.relation} t WHERE ({side.where}) "
               f"AND {side.key} IN (SELECT value FROM json_each(%s))")
    else:
        sql = (f"SELECT {side.key}, {cols} FROM {side.relation} t WHERE ({side.where}) "
               f"AND ({side.key}) = ANY(%s)")
    for start in range(0, len(raw), 50_000):
        chunk = list(raw[start:start + 50_000])
        param = orjson.dumps(chunk).decode() if reader.dialect == "sqlite" else chunk
        for k, *rest in query(reader, sql, (param,)):
            yield (side.key_of(k), *rest)


@dataclass
class CompareStats:
    buckets: int = 0
    differing_buckets: int = 0
    source_rows: int = 0
    target_rows: int = 0
    rows_fetched: int = 0  # rows read again for the row-level diff (both sides)
    # The raw source key of every drifted row the source still has (repairs read it).
    source_keys: dict[str, Any] = field(default_factory=dict, repr=False)


def compare(source: Reader, source_side: Side, target: Reader, target_side: Side,
            min_buckets: int) -> tuple[list[diff.KeyDiff], CompareStats]:
    """Range-hash compare: bucket summaries on both sides, rows only where they differ."""
    stats = CompareStats()
    stats.target_rows = count_rows(target, target_side)
    n = diff.prefix_len(min_buckets, stats.target_rows)
    stats.buckets = 16 ** n
    dst = summarise(target, target_side, n)
    src = summarise(source, source_side, n)
    stats.source_rows = src.rows
    wanted = diff.differing_buckets(src.sums, dst.sums)
    stats.differing_buckets = len(wanted)
    expected = rows_in(source, source_side, src, n, wanted)
    actual = rows_in(target, target_side, dst, n, wanted)
    stats.rows_fetched = len(expected) + len(actual)
    found = diff.classify(expected, actual)
    if src.keys is not None and source_side.key_of is not None:
        drifted = {d.key for d in found if d.expected}
        raw = {source_side.key_of(k): k for b in wanted for k in src.keys.get(b, ())}
        stats.source_keys = {rid: k for rid, k in raw.items() if rid in drifted}
    return found, stats


def naive_compare(source: Reader, source_side: Side, target: Reader,
                  target_side: Side) -> list[diff.KeyDiff]:
    """Every row of both sides, compared key by key (the baseline the bench measures)."""
    expected = {k: (v, diff.fields_digest(f)) for k, v, f in stream(source, source_side)}
    actual = {k: (v, diff.fields_digest(f)) for k, v, f in stream(target, target_side)}
    return diff.classify(expected, actual)
