"""The pure core of every check: two keyed snapshots in, drift out.

A snapshot maps a key to ``(version, digest)``. Comparing two snapshots is a function of
the two; the range-hash helpers (``bucket_of``, ``row_hash``, ``bucket_sums``) let each
side reduce its rows to per-bucket ``(count, sum of row hashes)`` so that only the rows of
buckets that differ have to be fetched and compared key by key. The same formulas are
written in SQL (``rangehash.py``): Python and SQL must agree bit for bit, which the unit
tests check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .model import DriftClass

Fingerprint = tuple[int, str]  # (version, digest of the compared fields)
BucketSums = dict[int, tuple[int, int]]  # bucket -> (rows, sum of 40-bit row hashes)


@dataclass(frozen=True, slots=True)
class KeyDiff:
    key: str
    drift_class: DriftClass
    expected: Fingerprint | None
    actual: Fingerprint | None


def classify(expected: Mapping[str, Fingerprint],
             actual: Mapping[str, Fingerprint]) -> list[KeyDiff]:
    """missing (expected, absent), extra (present, not expected), stale_version (versions
    differ), field_mismatch (same version, different content). Sorted by key."""
    out: list[KeyDiff] = []
    for key in sorted(expected.keys() | actual.keys()):
        exp, act = expected.get(key), actual.get(key)
        if act is None:
            out.append(KeyDiff(key, "missing", exp, None))
        elif exp is None:
            out.append(KeyDiff(key, "extra", None, act))
        elif exp[0] != act[0]:
            out.append(KeyDiff(key, "stale_version", exp, act))
        elif exp[1] != act[1]:
            out.append(KeyDiff(key, "field_mismatch", exp, act))
    return out


def bucket_of(key: str, buckets: int) -> int:
    """SQL: ``('x' || substr(md5(key), 1, 7))::bit(28)::int % buckets``."""
    return int(hashlib.md5(key.encode()).hexdigest()[:7], 16) % buckets


def row_hash(key: str, version: int, fields: str | None) -> int:
    """40 bits of md5(key|version|fields). Sums of up to 2^23 of them per bucket fit in a
    signed 64-bit integer (SQLite's sum() raises rather than overflow)."""
    text = f"{key}|{version}|{fields or ''}"
    return int(hashlib.md5(text.encode()).hexdigest()[:10], 16)


def fields_digest(fields: str | None) -> str:
    return hashlib.md5((fields or "").encode()).hexdigest()


def bucket_sums(rows: Iterable[tuple[str, int, str | None]], buckets: int) -> BucketSums:
    sums: dict[int, list[int]] = {}
    for key, version, fields in rows:
        acc = sums.setdefault(bucket_of(key, buckets), [0, 0])
        acc[0] += 1
        acc[1] += row_hash(key, version, fields)
    return {b: (c, s) for b, (c, s) in sums.items()}


def differing_buckets(a: BucketSums, b: BucketSums) -> list[int]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def effective_buckets(configured: int, rows: int, rows_per_bucket: int = 32) -> int:
    """Enough buckets that sparse drift touches few rows: with 0.1% of 1M rows drifted,
    1,024 buckets would nearly all differ; ~32 rows per bucket keeps the fetch to a few
    percent of the table while the per-bucket summary stays small."""
    return max(configured, rows // rows_per_bucket, 1)
