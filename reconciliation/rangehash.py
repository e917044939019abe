"""Range-hash comparison of two SQL relations (a CDC source table and a projection table).

Each side is a relation with SQL expressions for its key, version and compared fields.
Both sides are reduced to per-bucket ``(rows, sum of row hashes)`` *in the database*
(PostgreSQL: md5 in SQL; SQLite: the same formula as registered functions), so only the
bucket summaries cross the wire. Rows are then fetched only from buckets that differ and
compared key by key (``diff.classify``). A side whose key is not computable in SQL (a
CDC row's resource id is a UUIDv5 of its primary key) gives a Python ``key_of``; that side
is then streamed once and summarised in Python.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlparse

from . import diff

KeyOf = Callable[[str], str]


@dataclass(frozen=True)
class Side:
    relation: str
    key: str
    version: str
    fields: str
    where: str = "1 = 1"
    key_of: KeyOf | None = None  # Python key from the SQL key (None: the SQL key is the key)


class Reader(Protocol):
    dialect: str

    def query(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]: ...

    def close(self) -> None: ...


class SqliteReader:
    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self.conn.create_function("fb_bucket", 2, diff.bucket_of, deterministic=True)
        self.conn.create_function(
            "fb_h40", 3, lambda k, v, f: diff.row_hash(k, int(v), f), deterministic=True)

    def query(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        yield from self.conn.execute(sql.replace("%s", "?"), params)

    def close(self) -> None:
        self.conn.close()


class PgReader:
    dialect = "postgresql"

    def __init__(self, dsn: str) -> None:
        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=True)

    def query(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        # A server-side cursor: a million rows stream in chunks, never all in memory.
        with self.conn.transaction(), self.conn.cursor(name="fhirbus_reconcile") as cur:
            cur.itersize = 20_000
            cur.execute(sql, params or None)
            yield from cur

    def close(self) -> None:
        self.conn.close()


def open_reader(dsn: str) -> Reader:
    if dsn.startswith(("postgresql://", "postgres://")) or "dbname=" in dsn:
        return PgReader(dsn)
    if dsn.startswith("sqlite://"):
        return SqliteReader(urlparse(dsn).path)
    return SqliteReader(dsn[len("sqlite:"):] if dsn.startswith("sqlite:") else dsn)


def _bucket_sql(reader: Reader, key: str) -> str:
    if reader.dialect == "sqlite":
        return f"fb_bucket({key}, %s)"
    return f"((('x' || substr(md5({key}), 1, 7))::bit(28)::int) %% %s)"


def _hash_sql(reader: Reader, key: str, version: str, fields: str) -> str:
    if reader.dialect == "sqlite":
        return f"fb_h40({key}, {version}, {fields})"
    text = f"{key} || '|' || ({version})::text || '|' || coalesce({fields}, '')"
    return f"(('x' || substr(md5({text}), 1, 10))::bit(40)::bigint)"


def _inner(side: Side) -> str:
    return (f"SELECT CAST(({side.key}) AS TEXT) AS k, {side.version} AS v, {side.fields} AS f "
            f"FROM {side.relation} WHERE {side.where}")


def count_rows(reader: Reader, side: Side) -> int:
    return int(next(iter(reader.query(
        f"SELECT count(*) FROM {side.relation} WHERE {side.where}")))[0])


def stream(reader: Reader, side: Side) -> Iterator[tuple[str, int, str | None]]:
    """(key, version, fields) of every row, keys through ``key_of`` when set."""
    key_of = side.key_of
    for k, v, f in reader.query(_inner(side)):
        yield (key_of(k) if key_of else k), int(v), f


def bucket_sums(reader: Reader, side: Side, buckets: int) -> diff.BucketSums:
    if side.key_of is not None:
        return diff.bucket_sums(stream(reader, side), buckets)
    row_hash = _hash_sql(reader, "k", "v", "f")
    sql = (f"SELECT {_bucket_sql(reader, 'k')} AS b, count(*), sum({row_hash}) "
           f"FROM ({_inner(side)}) AS s GROUP BY b")
    return {int(b): (int(c), int(s)) for b, c, s in reader.query(sql, (buckets,))}


def rows_in(reader: Reader, side: Side, buckets: int,
            wanted: Sequence[int]) -> dict[str, diff.Fingerprint]:
    """Fingerprints of the rows in the ``wanted`` buckets only."""
    if not wanted:
        return {}
    if side.key_of is not None:
        keep = set(wanted)
        return {k: (v, diff.fields_digest(f)) for k, v, f in stream(reader, side)
                if diff.bucket_of(k, buckets) in keep}
    if reader.dialect == "sqlite":
        marks = ", ".join("?" * len(wanted))
        sql = f"SELECT k, v, f FROM ({_inner(side)}) AS s WHERE fb_bucket(k, ?) IN ({marks})"
        params: list[Any] = [buckets, *wanted]
    else:
        sql = (f"SELECT k, v, f FROM ({_inner(side)}) AS s "
               f"WHERE {_bucket_sql(reader, 'k')} = ANY(%s)")
        params = [buckets, list(wanted)]
    return {k: (int(v), diff.fields_digest(f)) for k, v, f in reader.query(sql, params)}


@dataclass
class CompareStats:
    buckets: int = 0
    differing_buckets: int = 0
    source_rows: int = 0
    target_rows: int = 0
    rows_fetched: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def compare(source: Reader, source_side: Side, target: Reader, target_side: Side,
            min_buckets: int) -> tuple[list[diff.KeyDiff], CompareStats]:
    """Range-hash compare: bucket summaries on both sides, rows only where they differ."""
    stats = CompareStats()
    stats.target_rows = count_rows(target, target_side)
    stats.buckets = n = diff.effective_buckets(min_buckets, stats.target_rows)
    src_sums = bucket_sums(source, source_side, n)
    stats.source_rows = sum(c for c, _ in src_sums.values())
    wanted = diff.differing_buckets(src_sums, bucket_sums(target, target_side, n))
    stats.differing_buckets = len(wanted)
    expected = rows_in(source, source_side, n, wanted)
    actual = rows_in(target, target_side, n, wanted)
    stats.rows_fetched = len(expected) + len(actual)
    return diff.classify(expected, actual), stats


def naive_compare(source: Reader, source_side: Side, target: Reader,
                  target_side: Side) -> list[diff.KeyDiff]:
    """Every row of both sides, compared key by key (the baseline the bench measures)."""
    expected = {k: (v, diff.fields_digest(f)) for k, v, f in stream(source, source_side)}
    actual = {k: (v, diff.fields_digest(f)) for k, v, f in stream(target, target_side)}
    return diff.classify(expected, actual)
