"""The pure diff and the range-hash formulas: SQL (SQLite functions) and Python agree."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from fhirbus.reconciliation import diff, rangehash

snapshots = st.dictionaries(st.text(min_size=1, max_size=6),
                            st.tuples(st.integers(0, 5), st.sampled_from("abc")), max_size=30)


@given(snapshots, snapshots)
@settings(max_examples=200, deadline=None)
def test_classify_names_every_key_that_differs_and_only_those(a: dict, b: dict) -> None:
    found = {d.key: d.drift_class for d in diff.classify(a, b)}
    assert set(found) == {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    for key, cls in found.items():
        expected = ("missing" if key not in b else "extra" if key not in a else
                    "stale_version" if a[key][0] != b[key][0] else "field_mismatch")
        assert cls == expected


def test_sqlite_bucket_sums_equal_python_and_locate_the_drift(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "t.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, version INTEGER, f TEXT)")
    rows = [(f"r{i}", i % 4, f"v{i}") for i in range(500)]
    conn.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
    conn.commit()
    reader = rangehash.SqliteReader(str(path))
    side = rangehash.Side("t", "id", "version", "f")
    assert rangehash.bucket_sums(reader, side, 16) == diff.bucket_sums(rows, 16)
    conn.execute("UPDATE t SET f = 'x' WHERE id = 'r7'")
    conn.execute("DELETE FROM t WHERE id = 'r9'")
    conn.commit()
    expected = {k: (v, diff.fields_digest(f)) for k, v, f in rows}
    wanted = diff.differing_buckets(diff.bucket_sums(rows, 16),
                                    rangehash.bucket_sums(reader, side, 16))
    actual = rangehash.rows_in(reader, side, 16, wanted)
    exp = {k: fp for k, fp in expected.items() if diff.bucket_of(k, 16) in wanted}
    assert [(d.key, d.drift_class) for d in diff.classify(exp, actual)] == [
        ("r7", "field_mismatch"), ("r9", "missing")]
    reader.close()
