"""The store interface and versioned migrations, one contract for SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhirbus.projections import positions as pos
from fhirbus.projections import testing
from fhirbus.projections.migrations import (
    COMMON,
    MIGRATIONS_TABLE,
    Migration,
    applied_versions,
    drop_generation,
    migrate,
    prefix,
)
from fhirbus.projections.store import (
    PostgresStore,
    SqliteStore,
    Store,
    describe,
    insert_returning,
    open_store,
    select_in,
)

EXTRA = Migration(2, "widgets", ("CREATE TABLE {p}widgets (id TEXT PRIMARY KEY, n BIGINT)",))


def test_migrations_are_versioned_and_applied_once(store: Store) -> None:
    assert migrate(store, "demo", 1, [COMMON]) == [1]
    assert migrate(store, "demo", 1, [COMMON, EXTRA]) == [2]
    assert migrate(store, "demo", 1, [COMMON, EXTRA]) == []
    assert migrate(store, "demo", 2, [COMMON]) == [1], "each generation has its own schema"
    with store.transaction() as tx:
        assert applied_versions(tx, "demo", 1) == {1, 2}
        tx.execute(f"INSERT INTO {prefix('demo', 1)}widgets VALUES (?, ?)", ("a", 1))
        rows = tx.execute(f"SELECT description FROM {MIGRATIONS_TABLE} WHERE generation = 1 "
                          "ORDER BY version")
    assert [r[0] for r in rows] == ["positions, stats, history", "widgets"]


def test_migration_versions_must_ascend(store: Store) -> None:
    with pytest.raises(ValueError, match="ascending"):
        migrate(store, "demo", 1, [EXTRA, COMMON])


def test_a_failed_migration_rolls_back_whole(store: Store) -> None:
    bad = Migration(2, "bad", ("CREATE TABLE {p}ok (id TEXT)", "CREATE TABLE {p}ok (id TEXT)"))
    migrate(store, "demo", 1, [COMMON])
    with pytest.raises(Exception):  # noqa: B017 - each driver raises its own class
        migrate(store, "demo", 1, [COMMON, bad])
    with store.transaction() as tx:
        assert applied_versions(tx, "demo", 1) == {1}
    assert migrate(store, "demo", 1, [COMMON, EXTRA]) == [2]


def test_generations_and_positions(store: Store) -> None:
    assert pos.ensure_active(store, "demo") == 1
    migrate(store, "demo", 1, [COMMON])
    with store.transaction() as tx:
        p = prefix("demo", 1)
        pos.save(tx, p, {("a", 0): 10, ("a", 1): 5})
        pos.save(tx, p, {("a", 0): 7, ("b", 0): 1})
        assert pos.load(tx, p) == {("a", 0): 10, ("a", 1): 5, ("b", 0): 1}
        assert pos.load(tx, p, [("a", 1)]) == {("a", 1): 5}
        pos.add_stats(tx, p, {"applied": 3, "stale": 0})
        pos.add_stats(tx, p, {"applied": 2})
        assert pos.load_stats(tx, p) == {"applied": 5}
        pos.set_active(tx, "demo", 2)
        assert pos.active(tx, "demo", share=True) == 2
    drop_generation(store, "demo", 1, ["positions", "stats", "history"])
    with store.transaction() as tx:
        assert applied_versions(tx, "demo", 1) == set()


def test_insert_returning_reports_only_new_rows(store: Store) -> None:
    with store.transaction() as tx:
        tx.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v BIGINT)")
        rows = [(f"k{i}", i) for i in range(450)]
        args = ("t", ("k", "v"), ("text", "bigint"))
        new = insert_returning(tx, *args, rows[:300], "ON CONFLICT DO NOTHING RETURNING k")
        assert len(new) == 300
        again = insert_returning(tx, *args, rows + rows[:5], "ON CONFLICT DO NOTHING RETURNING k")
        assert sorted(r[0] for r in again) == sorted(k for k, _ in rows[300:])
        found = select_in(tx, "SELECT k FROM t WHERE v >= ? AND k IN ({in})",
                          [k for k, _ in rows[::2]], (0,))
        assert len(found) == 225


def test_open_store_reads_dsns(tmp_path: Path) -> None:
    sqlite = open_store(f"sqlite://{tmp_path / 'a.sqlite'}")
    assert isinstance(sqlite, SqliteStore) and sqlite.path == tmp_path / "a.sqlite"
    sqlite.close()
    assert isinstance(open_store("postgresql://u:pw@db:5433/x"), PostgresStore)
    assert describe("postgresql://u:pw@db:5433/x") == "postgresql://db:5433/x"
    # A conninfo DSN carries its password too; status output and errors must drop it.
    assert describe("host=db port=5433 dbname=x user=u password=pw") == "postgresql://db:5433/x"


@pytest.mark.parametrize("durable", [False, True])
@pytest.mark.parametrize("backend", testing.BACKENDS)
def test_commits_wait_for_the_wal_flush_only_when_durable(
        backend: str, tmp_path: Path, durable: bool) -> None:
    # Positions commit with the rows, so a lost tail is re-applied from Kafka: a read
    # model does not need a flush per commit unless the operator asks for it.
    if backend == "postgresql" and (why := testing.pg_available()):
        pytest.skip(why)
    with testing.backend_dsn(backend, tmp_path) as dsn:
        store = open_store(dsn, durable=durable)
        try:
            with store.transaction() as tx:
                if backend == "sqlite":
                    (mode,), = tx.execute("PRAGMA synchronous")
                    assert mode == (2 if durable else 1)  # FULL / NORMAL
                else:
                    (mode,), = tx.execute("SHOW synchronous_commit")
                    assert mode == ("on" if durable else "off")
        finally:
            store.close()


def test_postgres_connections_notice_a_vanished_server(tmp_path: Path) -> None:
    # Without keepalives and a TCP user timeout, a server gone without a reset (failover)
    # held a batch for the kernel's TCP timeout before the runtime could reconnect.
    if why := testing.pg_available():
        pytest.skip(why)
    with testing.backend_dsn("postgresql", tmp_path) as dsn:
        mine = f"{dsn}{'&' if '?' in dsn else '?'}connect_timeout=3"
        store = PostgresStore(mine)
        try:
            params = store._connection().info.get_parameters()
        finally:
            store.close()
    assert params["keepalives"] == "1" and params["keepalives_idle"] == "15"
    assert params["tcp_user_timeout"] == "30000"
    assert params["connect_timeout"] == "3"  # what the DSN says wins
