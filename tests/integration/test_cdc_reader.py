"""``fhirbus cdc run`` in process, against the real local PostgreSQL and the embedded broker:
Debezium-format events for inserts, updates and deletes, TOAST handling, tables without a
primary key, and an initial snapshot that joins the live stream with no gap and no duplicate.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict

import psycopg
import pytest

from fhirbus.connectors.cdc import snapshot
from fhirbus.connectors.cdc.events import UNAVAILABLE
from fhirbus.connectors.cdc.reader import CdcReader, run
from fhirbus.connectors.sources import SourceDeclaration, TableDeclaration
from fhirbus.settings import ConfigError, Settings
from tests.cdc_helpers import PG_DSN, decoded, pg_unavailable, private_source
from tests.kafka_helpers import read_all

pytestmark = pytest.mark.postgres
if (why := pg_unavailable()) is not None:
    pytestmark = [pytest.mark.postgres, pytest.mark.skip(reason=why)]


def sql(statements: list[str]) -> None:
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def drain(source: SourceDeclaration, settings: Settings, idle_exit_s: float = 0.3) -> CdcReader:
    reader = CdcReader(source, settings)
    try:
        run(reader, threading.Event(), idle_exit_s=idle_exit_s)
    finally:
        reader.close()
    return reader


def events(settings: Settings, source: SourceDeclaration, table: str, expected: int) -> list:
    decl = next(t for t in source.tables if t.table == table)
    bootstrap = settings.kafka_bootstrap or _bootstrap(settings)
    msgs = read_all(bootstrap, source.topic(decl), expected, timeout_s=15)
    return decoded(sorted(msgs, key=lambda m: (m.partition(), m.offset())))


def _bootstrap(settings: Settings) -> str:
    from fhirbus.kafka.config import resolve_bootstrap

    return resolve_bootstrap(settings)


def test_insert_update_delete_become_debezium_events(settings: Settings) -> None:
    with private_source(snapshot="never") as source:
        s = source.tables[0].schema_name
        drain(source, settings)  # creates the slot: changes from here on are captured
        sql([f"INSERT INTO {s}.patients (id, mrn, family_name, birth_date, updated_at) "
             "VALUES (7, 'MRN7', 'Doe', '1980-02-03', '2024-05-06 07:08:09.5+02')",
             f"UPDATE {s}.patients SET given_name = 'Jo', row_version = 2 WHERE id = 7",
             f"INSERT INTO {s}.charges (id, patient_id, charge_code, unit_price, status, "
             "service_date) VALUES (1, 7, 'LAB1', 12.50, 'billable', '2024-01-01')",
             f"DELETE FROM {s}.charges WHERE id = 1"])
        reader = drain(source, settings)
        assert reader.stats.changes == 4
        pats = events(settings, source, "patients", 2)
        assert [(k, v["op"]) for k, v, _ in pats] == [({"id": 7}, "c"), ({"id": 7}, "u")]
        created, updated = pats[0][1], pats[1][1]
        assert created["before"] is None
        assert created["after"]["birth_date"] == 3685  # days since 1970-01-01
        assert created["after"]["updated_at"] == "2024-05-06T05:08:09.500000Z"
        assert updated["after"]["given_name"] == "Jo" and updated["before"] is None
        src = updated["source"]
        assert src["connector"] == "postgresql" and src["snapshot"] == "false"
        assert src["table"] == "patients" and src["schema"] == s and src["db"] == "test"
        assert isinstance(src["lsn"], int) and isinstance(src["txId"], int)
        assert created["source"]["lsn"] < src["lsn"]
        charges = events(settings, source, "charges", 3)
        assert [v and v["op"] for _, v, _ in charges] == ["c", "d", None]  # tombstone last
        assert charges[0][1]["after"]["unit_price"] == "12.50"
        assert charges[1][1]["before"]["id"] == 1 and charges[1][1]["after"] is None
        assert all(key == {"id": 1} for key, _, _ in charges)


def test_key_change_is_delete_tombstone_then_create(settings: Settings) -> None:
    with private_source(snapshot="never", tables=("patients",)) as source:
        s = source.tables[0].schema_name
        drain(source, settings)
        sql([f"INSERT INTO {s}.patients (id, mrn, family_name) VALUES (1, 'A', 'X')",
             f"UPDATE {s}.patients SET id = 2 WHERE id = 1"])
        drain(source, settings)
        got = [(k["id"], v and v["op"]) for k, v, _ in events(settings, source, "patients", 4)]
        assert sorted(got, key=str) == sorted([(1, "c"), (1, "d"), (1, None), (2, "c")], key=str)
        ones = [op for key, op in got if key == 1]
        assert ones == ["c", "d", None]


def test_unchanged_toast_uses_old_row_or_placeholder(settings: Settings) -> None:
    big = "".join(f"{i:x}" for i in range(3000))  # > 2 kB, does not compress away
    with private_source(snapshot="never", tables=("patients", "lab_results")) as source:
        s = source.tables[0].schema_name
        sql([f"INSERT INTO {s}.patients (id, mrn, family_name) VALUES (1, 'A', 'X')"])
        drain(source, settings)
        insert = (f"INSERT INTO {s}.lab_results (id, patient_id, loinc_code, test_name, status,"
                  " collected_at, comment) VALUES ({id}, 1, '1-8', 'T', 'F', now(), %s)")
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(insert.format(id=1).replace("%s", f"'{big}'"))  # type: ignore[arg-type]
            conn.execute(f"UPDATE {s}.lab_results SET status = 'C' WHERE id = 1")  # type: ignore[arg-type]
            conn.execute(f"ALTER TABLE {s}.lab_results REPLICA IDENTITY DEFAULT")  # type: ignore[arg-type]
        drain(source, settings)  # the reader learns the table's identity at start
        sql([f"UPDATE {s}.lab_results SET status = 'X' WHERE id = 1"])
        drain(source, settings)
        got = events(settings, source, "lab_results", 3)
        assert [v["op"] for _, v, _ in got] == ["c", "u", "u"]
        full, default = got[1][1], got[2][1]
        assert full["after"]["comment"] == big and full["before"]["status"] == "F"
        assert default["after"]["comment"] == UNAVAILABLE and default["after"]["status"] == "X"


def test_table_without_primary_key_is_refused_unless_keyed(settings: Settings) -> None:
    with private_source(snapshot="never", tables=("patients",)) as base:
        s = base.tables[0].schema_name
        audit = TableDeclaration(schema=s, table="audit_log")  # type: ignore[call-arg]
        bare = base.model_copy(update={"tables": (audit,)})
        with pytest.raises(ConfigError, match="no primary key"):
            CdcReader(bare, settings).start()
        keyed_decl = TableDeclaration(schema=s, table="audit_log",  # type: ignore[call-arg]
                                      key_columns=("actor", "action"))
        keyed = base.model_copy(update={"tables": (keyed_decl,)})
        with pytest.raises(ConfigError, match="REPLICA IDENTITY FULL"):
            CdcReader(keyed, settings).start()
        sql([f"ALTER TABLE {s}.audit_log REPLICA IDENTITY FULL"])
        drain(keyed, settings)
        sql([f"INSERT INTO {s}.audit_log (actor, action) VALUES ('u1', 'login')",
             f"DELETE FROM {s}.audit_log"])
        drain(keyed, settings)
        got = events(settings, keyed, "audit_log", 3)
        assert [k for k, _, _ in got] == [{"actor": "u1", "action": "login"}] * 3
        assert got[1][1]["before"]["actor"] == "u1"  # the whole old row


def test_snapshot_then_stream_has_no_gap_and_no_duplicate(settings: Settings) -> None:
    with private_source(tables=("patients",)) as source:
        s = source.tables[0].schema_name
        insert = f"INSERT INTO {s}.patients (id, mrn, family_name) VALUES (%s, %s, 'X')"
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            for i in range(1, 301):
                conn.execute(insert, (i, f"M{i}"))  # type: ignore[arg-type]
        written, stop = [300], threading.Event()

        def writer() -> None:  # keeps committing while the snapshot is taken
            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                while not stop.is_set() and written[0] < 900:
                    written[0] += 1
                    conn.execute(insert, (written[0], f"M{written[0]}"))  # type: ignore[arg-type]

        thread = threading.Thread(target=writer)
        thread.start()
        time.sleep(0.05)
        reader = drain(source, settings, idle_exit_s=0.5)
        stop.set()
        thread.join()
        drain(source, settings)
        got = events(settings, source, "patients", written[0])
        ops: dict[int, list[str]] = defaultdict(list)
        for key, value, _ in got:
            ops[key["id"]].append(value["op"])
        assert sorted(ops) == list(range(1, written[0] + 1))  # no gap
        assert all(len(v) == 1 for v in ops.values())  # no duplicate
        assert reader.stats.snapshot_rows >= 300
        marks = [v["source"]["snapshot"] for _, v, _ in got if v["op"] == "r"]
        assert marks.count("last") == 1 and len(marks) == reader.stats.snapshot_rows
        state = snapshot.read_state(snapshot.state_path(settings.state_dir, source.name))
        assert state is not None and state.status == "done"


def test_interrupted_snapshot_restarts_from_a_fresh_slot(settings: Settings) -> None:
    with private_source(tables=("patients",)) as source:
        s = source.tables[0].schema_name
        sql([f"INSERT INTO {s}.patients (id, mrn, family_name) VALUES (1, 'A', 'X')"])
        path = snapshot.state_path(settings.state_dir, source.name)
        # A crash after the slot was created, before the snapshot completed:
        snapshot.write_state(path, snapshot.SnapshotState(source.slot, "pending"))
        sql([f"SELECT pg_create_logical_replication_slot('{source.slot}', 'pgoutput')"])
        drain(source, settings)
        assert snapshot.read_state(path).status == "done"  # type: ignore[union-attr]
        got = events(settings, source, "patients", 1)
        assert [(k, v["op"]) for k, v, _ in got] == [({"id": 1}, "r")]
        os.remove(path)  # state lost but the slot exists: refuse rather than guess
        with pytest.raises(ConfigError, match="no record of a completed snapshot"):
            CdcReader(source, settings).start()
