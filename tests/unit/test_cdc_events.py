"""wal2json / pgoutput output -> Debezium events, without a database."""

from __future__ import annotations

import struct
from datetime import UTC, date, datetime, timedelta, timezone

import orjson
from hypothesis import given
from hypothesis import strategies as st

from fhirbus.connectors.cdc.changes import format_lsn, parse_lsn
from fhirbus.connectors.cdc.decoders import PgoutputDecoder, Wal2JsonDecoder
from fhirbus.connectors.cdc.events import (
    UNAVAILABLE,
    Position,
    SourceInfo,
    TableInfo,
    change_records,
    debezium_value,
)

TABLE = TableInfo("lab", "results", (("id", "bigint"), ("value", "numeric(12,4)"),
                                      ("taken", "timestamp with time zone"),
                                      ("day", "date"), ("ok", "boolean"), ("note", "text")),
                  ("id",), replica_full=False)
INFO = SourceInfo("lab", "test")


def w2j(action: str, **fields: object) -> bytes:
    return orjson.dumps({"action": action, **fields})


def cols(**values: object) -> list[dict[str, object]]:
    return [{"name": k, "type": "x", "value": v} for k, v in values.items()]


def test_wal2json_transactions_and_changes() -> None:
    rows = [
        (100, 7, w2j("B", xid=7, timestamp="2024-01-02 03:04:05.5+00")),
        (101, 7, w2j("I", schema="lab", table="results",
                     columns=cols(id=1, value="1.5000", ok=True, note="n"))),
        (102, 7, w2j("U", schema="lab", table="results", columns=cols(id=1, value="2.0"))),
        (103, 7, w2j("D", schema="lab", table="results", identity=cols(id=1))),
        (110, 7, w2j("C")),
        (120, 8, w2j("B", xid=8)),  # unfinished: not returned, the slot is not advanced past it
    ]
    [tx] = Wal2JsonDecoder().decode(rows)
    assert (tx.xid, tx.end_lsn) == (7, 110)
    assert tx.commit_ts_ms == int(datetime(2024, 1, 2, 3, 4, 5, 500000, UTC).timestamp() * 1000)
    assert [c.op for c in tx.changes] == ["c", "u", "d"]
    assert tx.changes[1].new == {"id": 1, "value": "2.0"} and tx.changes[2].old == {"id": 1}


def _tuple(values: list[str | bytes | None]) -> bytes:
    out = struct.pack(">h", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v == b"u":
            out += b"u"
        else:
            data = v.encode() if isinstance(v, str) else v
            out += b"t" + struct.pack(">i", len(data)) + data
    return out


def _relation() -> bytes:
    body = struct.pack(">I", 42) + b"lab\0results\0" + b"d" + struct.pack(">h", 2)
    body += b"\x01id\0" + struct.pack(">Ii", 20, -1) + b"\x00note\0" + struct.pack(">Ii", 25, -1)
    return b"R" + body


def test_pgoutput_decodes_begin_relation_changes_commit() -> None:
    begin = b"B" + struct.pack(">qqI", 0, 86_400_000_000, 9)  # one day after 2000-01-01
    insert = b"I" + struct.pack(">I", 42) + b"N" + _tuple(["1", "hello"])
    update = b"U" + struct.pack(">I", 42) + b"K" + _tuple(["1", None]) + b"N" + \
        _tuple(["2", b"u"])
    delete = b"D" + struct.pack(">I", 42) + b"K" + _tuple(["2", None])
    commit = b"C" + struct.pack(">bqqq", 0, 0, 0, 0)
    rows = [(1, 9, begin), (1, 9, _relation()), (1, 9, insert), (2, 9, update),
            (3, 9, delete), (4, 9, commit)]
    [tx] = PgoutputDecoder().decode(rows)
    assert tx.commit_ts_ms == int(datetime(2000, 1, 2, tzinfo=UTC).timestamp() * 1000)
    assert (tx.xid, tx.end_lsn) == (9, 4)
    ins, upd, dele = tx.changes
    assert ins.new == {"id": "1", "note": "hello"}
    assert upd.old == {"id": "1"}  # a key-only old tuple: the null non-key column is dropped
    assert upd.new is not None and upd.new["id"] == "2" and "note" in upd.new
    assert dele.op == "d" and dele.old == {"id": "2"}


def test_update_without_toast_value_gets_the_placeholder_and_key_change_splits() -> None:
    [tx] = PgoutputDecoder().decode([
        (1, 9, b"B" + struct.pack(">qqI", 0, 0, 9)), (1, 9, _relation()),
        (2, 9, b"U" + struct.pack(">I", 42) + b"K" + _tuple(["1", None]) + b"N" +
         _tuple(["2", b"u"])),
        (3, 9, b"C" + struct.pack(">bqqq", 0, 0, 0, 0))])
    table = TableInfo("lab", "results", (("id", "bigint"), ("note", "text")), ("id",))
    records = change_records(INFO, table, "cdc.lab.lab.results", tx.changes[0],
                             Position(2, 9, 0), 0)
    assert [r.key for r in records] == [b'{"id":1}', b'{"id":1}', b'{"id":2}']
    values = [r.value and orjson.loads(r.value) for r in records]
    assert values[0]["op"] == "d" and values[1] is None and values[2]["op"] == "c"
    assert values[2]["after"] == {"id": 2, "note": UNAVAILABLE}


def test_event_envelope_shape() -> None:
    from fhirbus.connectors.cdc.changes import Change

    change = Change("c", "lab", "results", {"id": "5", "value": "12.5000", "day": "2024-03-01",
                                            "taken": "2024-03-01 10:00:00.25+01",
                                            "ok": "t", "note": None}, None, 77)
    [record] = change_records(INFO, TABLE, "cdc.lab.lab.results", change,
                              Position(77, 3, 1_000, "false", 70), 2_000)
    value = orjson.loads(record.value)  # type: ignore[arg-type]
    assert set(value) == {"before", "after", "source", "op", "ts_ms", "transaction"}
    assert value["after"] == {"id": 5, "value": "12.5000", "taken": "2024-03-01T09:00:00.250000Z",
                              "day": (date(2024, 3, 1) - date(1970, 1, 1)).days, "ok": True,
                              "note": None}
    assert value["source"] == {
        "version": value["source"]["version"], "connector": "postgresql", "name": "cdc.lab",
        "ts_ms": 1_000, "snapshot": "false", "db": "test", "sequence": '["70","77"]',
        "schema": "lab", "table": "results", "txId": 3, "lsn": 77, "xmin": None}
    assert record.key == b'{"id":5}'


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_lsn_text_round_trip(value: int) -> None:
    assert parse_lsn(format_lsn(value)) == value


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),
                    timezones=st.just(UTC)),
       st.integers(min_value=-14 * 60, max_value=14 * 60))
def test_timestamptz_is_the_same_instant_in_utc(moment: datetime, offset_min: int) -> None:
    local = moment.astimezone(timezone(timedelta(minutes=offset_min)))
    text = local.isoformat(sep=" ")
    out = debezium_value("timestamp with time zone", text)
    assert isinstance(out, str) and out.endswith("Z")
    assert datetime.fromisoformat(out.replace("Z", "+00:00")) == moment


@given(st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)))
def test_dates_are_days_since_epoch(day: date) -> None:
    assert debezium_value("date", day.isoformat()) == (day - date(1970, 1, 1)).days


@given(st.decimals(allow_nan=False, allow_infinity=False, places=4))
def test_numeric_keeps_its_digits_as_a_string(number: object) -> None:
    assert debezium_value("numeric(30,4)", str(number)) == str(number)


def test_other_types() -> None:
    assert debezium_value("bytea", "\\x0102") == "AQI="
    assert debezium_value("timestamp without time zone", "1970-01-01 00:00:01.5") == 1_500_000
    assert debezium_value("time without time zone", "01:00:00") == 3_600_000_000
    assert debezium_value("jsonb", '{"a": 1}') == '{"a": 1}'
    assert debezium_value("integer", 5) == 5 and debezium_value("boolean", False) is False
    assert debezium_value("date", "infinity") == "infinity"
