"""The pure diff, the fast resource ids and the range-hash compare on SQLite: the range-hash
compare finds exactly what the naive row-by-row compare finds."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from fhirbus.consumers.canonicalizer.identity import fast_stable_id
from fhirbus.reconciliation import diff, ids, rangehash

snapshots = st.dictionaries(st.text(min_size=1, max_size=6),
                            st.tuples(st.integers(0, 5), st.sampled_from("abc")), max_size=30)
RID = ids.StableIds("cdc", "src", "labbilling.t")


@given(snapshots, snapshots)
@settings(max_examples=200, deadline=None)
def test_classify_names_every_key_that_differs_and_only_those(a: dict, b: dict) -> None:
    found = {d.key: d.drift_class for d in diff.classify(a, b)}
    assert set(found) == {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    for key, cls in found.items():
        expected = ("missing" if key not in b else "extra" if key not in a else
                    "stale_version" if a[key][0] != b[key][0] else "field_mismatch")
        assert cls == expected


@given(st.one_of(st.integers(-2**63, 2**63 - 1), st.text(max_size=20), st.none()),
       st.text(max_size=10))
@settings(max_examples=300, deadline=None)
def test_stable_ids_equal_the_mappings_id_and_expose_its_digest(key: object, part: str) -> None:
    rid = ids.StableIds("cdc", part, None)
    text = rid(key)
    assert text == fast_stable_id("cdc", part, None, key)
    digest = rid.digest(key)
    assert int(text[:8], 16) == int.from_bytes(digest[:4], "big")
    assert diff.key_bits(text) == int.from_bytes(digest[10:15], "big")


def _tables(path: Path, source: list[tuple], target: list[tuple]) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE src (pk INTEGER PRIMARY KEY, version INTEGER, f TEXT)")
    conn.execute("CREATE TABLE dst (id TEXT PRIMARY KEY, version INTEGER, f TEXT)")
    conn.executemany("INSERT INTO src VALUES (?, ?, ?)", source)
    conn.executemany("INSERT INTO dst VALUES (?, ?, ?)", target)
    conn.commit()
    conn.close()


SRC = rangehash.Side("src", "pk", "version", "f", key_of=RID)
DST = rangehash.Side("dst", "id", "version", "f")


def test_summaries_match_the_pure_bucket_sums_and_keep_the_source_keys(tmp_path: Path) -> None:
    rows = [(pk, pk % 4, f"v{pk}") for pk in range(1, 501)]
    _tables(tmp_path / "t.sqlite", rows, [(RID(pk), v, f) for pk, v, f in rows])
    reader = rangehash.SqliteReader(str(tmp_path / "t.sqlite"))
    expected = diff.bucket_sums([(RID(pk), v, f) for pk, v, f in rows], 2)
    src, dst = rangehash.summarise(reader, SRC, 2), rangehash.summarise(reader, DST, 2)
    reader.close()
    assert src.sums == dst.sums == expected
    assert src.keys is not None and dst.keys is None
    assert sorted(k for keys in src.keys.values() for k in keys) == list(range(1, 501))
    assert all(diff.bucket_of(RID(k), 2) == b for b, keys in src.keys.items() for k in keys)


drift = st.lists(st.tuples(st.integers(1, 300), st.sampled_from(
    ["missing", "extra", "stale_version", "field_mismatch", "swap"])), max_size=12)


@given(drift, st.integers(1, 4096))
@settings(max_examples=40, deadline=None)
def test_range_hash_finds_exactly_what_the_naive_compare_finds(changes: list, buckets: int) -> None:
    source = [(pk, 1 + pk % 3, f"2345-{pk % 7}|{pk / 10}") for pk in range(1, 301)]
    target = {RID(pk): [v, f] for pk, v, f in source}
    for pk, kind in changes:
        rid = RID(pk)
        if kind == "missing":
            target.pop(rid, None)
        elif kind == "extra":
            target[RID(-pk)] = [1, "orphan"]
        elif rid in target and kind == "stale_version":
            target[rid][0] += 1
        elif rid in target and kind == "field_mismatch":
            target[rid][1] += "x"
        elif rid in target and RID(pk + 1) in target:  # content swapped between two rows
            target[rid], target[RID(pk + 1)] = target[RID(pk + 1)], target[rid]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.sqlite"
        _tables(path, source, [(k, v, f) for k, (v, f) in target.items()])
        reader = rangehash.SqliteReader(str(path))
        try:
            found, stats = rangehash.compare(reader, SRC, reader, DST, buckets)
            naive = rangehash.naive_compare(reader, SRC, reader, DST)
        finally:
            reader.close()
    assert found == naive
    assert set(stats.source_keys) == {d.key for d in found if d.expected}
    assert all(RID(pk) == rid for rid, pk in stats.source_keys.items())


def test_content_swapped_between_two_rows_of_one_bucket_is_found(tmp_path: Path) -> None:
    source = [(pk, 1, f"value {pk}") for pk in range(1, 41)]
    a, b = next((x, y) for x in range(1, 41) for y in range(x + 1, 41)
                if RID(x)[0] == RID(y)[0])  # same bucket with 16 buckets
    target = {RID(pk): (v, f) for pk, v, f in source}
    target[RID(a)], target[RID(b)] = target[RID(b)], target[RID(a)]
    _tables(tmp_path / "t.sqlite", source, [(k, v, f) for k, (v, f) in target.items()])
    reader = rangehash.SqliteReader(str(tmp_path / "t.sqlite"))
    try:
        found, stats = rangehash.compare(reader, SRC, reader, DST, 16)
    finally:
        reader.close()
    assert stats.buckets == 16 and stats.differing_buckets == 1
    assert sorted((d.key, d.drift_class) for d in found) == sorted(
        [(RID(a), "field_mismatch"), (RID(b), "field_mismatch")])


def test_a_row_deleted_at_the_source_and_retired_in_the_read_model_is_not_drift(
    tmp_path: Path,
) -> None:
    # Regression (seen in the demo): a CDC delete retires the result (entered-in-error); the
    # source no longer has the row, and the check reported it as "extra" drift.
    from fhirbus.reconciliation import cdc as cdc_check
    from fhirbus.reconciliation.checks import _deleted_at_source
    from fhirbus.reconciliation.diff import KeyDiff
    from fhirbus.reconciliation.model import CheckResult

    db = tmp_path / "ehr.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE results (id TEXT PRIMARY KEY, version INT, status TEXT)")
        conn.executemany("INSERT INTO results VALUES (?, 1, ?)",
                         [("retired", "entered-in-error"), ("live", "final")])
    check = next(c for c in cdc_check.LABBILLING if c.projection_table == "results")
    side = rangehash.Side("results", "id", "version", "status")
    diffs = [KeyDiff("retired", "extra", None, None), KeyDiff("live", "extra", None, None),
             KeyDiff("stale", "stale_version", None, None)]
    result = CheckResult("cdc")
    reader = rangehash.open_reader(f"sqlite://{db}")
    try:
        kept = _deleted_at_source(check, reader, side, diffs, result)
    finally:
        reader.close()
    assert [(d.key, d.drift_class) for d in kept] == [("live", "extra"), ("stale", "stale_version")]
    assert any("deleted at the source" in n for n in result.notes)
