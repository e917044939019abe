"""Check: CDC source tables against the projection rows built from them.

Each ``TableCheck`` pairs a source table with a projection table and states, once, the
compared fields as SQL on each side (the source in PostgreSQL, the projection in SQLite or
PostgreSQL) so that both render the same text for a row in step. The resource id of a
source row comes from the CDC mapping (``row_id`` / the identifier rule), the version from
its business-version column. The range-hash compare finds the differing rows; a drifted
row is repaired by mapping its *current* source state through the same mapping code and
publishing that canonical event (source kind ``reconciliation``, causation = the run).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import orjson

from fhirbus.consumers.canonicalizer.cdc import Mappings, TableMapping, map_change
from fhirbus.consumers.canonicalizer.cdc.debezium import Change
from fhirbus.schemas.envelope import CanonicalEvent

from . import ids, rangehash

_STATUS = ("CASE status WHEN 'P' THEN 'preliminary' WHEN 'F' THEN 'final' "
           "WHEN 'C' THEN 'corrected' WHEN 'X' THEN 'cancelled' END")
_SEX = ("CASE sex WHEN 'M' THEN 'male' WHEN 'F' THEN 'female' WHEN 'O' THEN 'other' "
        "WHEN 'U' THEN 'unknown' END")


def _joined(*exprs: str) -> str:
    """``a|b|c`` with NULL as empty text; the same SQL on SQLite and PostgreSQL."""
    return " || '|' || ".join(f"coalesce(CAST(({e}) AS TEXT), '')" for e in exprs)


@dataclass(frozen=True)
class TableCheck:
    table: str  # schema.table in the source
    projection: str
    projection_table: str
    source_fields: str  # PostgreSQL over the source row
    projection_fields: str  # SQL over the projection row
    # How the projection keys a row by resource id, and which of its rows this source
    # table made. None: ``id``, and the rows whose body names the table in meta.source.
    projection_key: str = "id"
    projection_where: str | None = None
    # False when the read model does not record which source made a row (billing keeps no
    # body): its rows the source lacks may come from elsewhere (HL7 DFT charges), so they
    # are counted in a note, not reported as drift.
    attributable: bool = True
    # SQL over a projection row: true when the row states the resource's retirement, which
    # is what a source DELETE becomes (Patient inactive, result entered-in-error). Such a row
    # with no source row is the delete applied, not drift.
    retired: str | None = None

    def name(self, source: str) -> str:
        return f"cdc:{source}.{self.table}->{self.projection}.{self.projection_table}"


LABBILLING: tuple[TableCheck, ...] = (
    TableCheck(
        "labbilling.patients", "ehr", "patients",
        _joined("family_name", "given_name", "birth_date", _SEX,
                "CASE WHEN active THEN 1 ELSE 0 END"),
        _joined("family", "given", "birth_date", "gender", "active"),
        retired="active = 0",
    ),
    TableCheck(
        "labbilling.lab_results", "ehr", "results",
        _joined("loinc_code", "CASE WHEN value_numeric IS NULL THEN value_text "
                "ELSE trim_scale(value_numeric)::text END",
                "CASE WHEN value_numeric IS NULL THEN NULL ELSE unit END", _STATUS),
        _joined("code", "value", "unit", "status"),
        retired="status = 'entered-in-error'",
    ),
    TableCheck(
        "labbilling.charges", "billing", "charges",
        _joined("charge_code", "CASE status WHEN 'cancelled' THEN 'not-billable' "
                "ELSE status END", "(unit_price * quantity * 100)::bigint", "currency"),
        _joined("code", "status", "amount_cents", "currency"),
        projection_key="substr(id, 12)",  # 'ChargeItem/<resource id>'
        projection_where="source_type = 'ChargeItem'", attributable=False,
    ),
)


def source_side(source: str, m: TableMapping, check: TableCheck) -> rangehash.Side:
    """The source table keyed by resource id: computed in Python, as the mapping does
    (``identity.resource_id`` for an identifier rule, ``mapper.row_id`` otherwise)."""
    if m.id_identifier is not None:
        rule = m.id_identifier
        return rangehash.Side(
            check.table, rule.column, str(m.version_column), check.source_fields,
            where=f"{rule.column} IS NOT NULL",
            key_of=ids.StableIds("hl7v2", m.resource, rule.system))
    if len(m.key) == 1:  # the raw key column itself: an integer key is kept as array('q')
        key = m.key[0]
    else:  # row_id joins the key parts with the same separator
        key = " || chr(31) || ".join(f"CAST({c} AS TEXT)" for c in m.key)
    return rangehash.Side(check.table, key, str(m.version_column), check.source_fields,
                          key_of=ids.StableIds("cdc", source, m.table))


def projection_side(source: str, check: TableCheck, prefix: str) -> rangehash.Side:
    # Only rows this source table produced: its mapping stamps meta.source on every body.
    marker = f'"source":"cdc://{source}/{check.table}"'
    where = check.projection_where or f"body LIKE '%{marker}%'"
    return rangehash.Side(f"{prefix}{check.projection_table}", check.projection_key,
                          "version", check.projection_fields, where=where)


def retired_keys(reader: rangehash.Reader, side: rangehash.Side, check: TableCheck,
                 keys: list[str]) -> set[str]:
    """Which of these projection rows state a retirement (see TableCheck.retired)."""
    if check.retired is None or not keys:
        return set()
    if reader.dialect == "sqlite":
        sql = (f"SELECT {side.key} FROM {side.relation} t WHERE ({side.where}) "
               f"AND ({check.retired}) AND {side.key} IN (SELECT value FROM json_each(%s))")
        param: Any = orjson.dumps(keys).decode()
    else:
        sql = (f"SELECT {side.key} FROM {side.relation} t WHERE ({side.where}) "
               f"AND ({check.retired}) AND ({side.key}) = ANY(%s)")
        param = keys
    return {row[0] for row in rangehash.query(reader, sql, (param,))}


def rows_by_key(reader: rangehash.Reader, side: rangehash.Side,
                raw_keys: list[Any]) -> dict[str, dict[str, Any]]:
    """Current source rows (as JSON, the shape a change event carries) by resource id,
    read by their raw source keys (what a compare remembered for the drifted rows)."""
    rows = rangehash.by_keys(reader, side, raw_keys, "row_to_json(t)::text")
    return {rid: orjson.loads(doc) for rid, doc in rows}


def source_rows(reader: rangehash.PgReader, side: rangehash.Side,
                wanted: set[str]) -> dict[str, dict[str, Any]]:
    """Current source rows by resource id when only ids are known (a worklist item):
    streams the keys once; only wanted rows are decoded."""
    assert side.key_of is not None
    sql = f"SELECT {side.key}, row_to_json(t)::text FROM {side.relation} t"
    out: dict[str, dict[str, Any]] = {}
    for raw_key, doc in rangehash.query(reader, sql):
        rid = side.key_of(raw_key)
        if rid in wanted:
            out[rid] = orjson.loads(doc)
    return out


def remap(source: str, m: TableMapping, mappings: Mappings, row: dict[str, Any],
          run_id: str) -> list[CanonicalEvent]:
    """The canonical event(s) the current source row maps to, marked as a repair."""
    schema, table = m.table.split(".", 1)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    change = Change(op="r", before=None, after=row, key=None, source_name=source,
                    schema=schema, table=table, lsn=None, tx_id=None, commit_ms=now_ms,
                    seen_ms=now_ms, snapshot=True)
    ref = SimpleNamespace(topic=None, partition=None, offset=None, timestamp_ms=now_ms)
    return [replace(e, source=replace(e.source, kind="reconciliation"), causation_id=run_id)
            for e in map_change(change, mappings, ref)]
