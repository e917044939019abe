"""Read-side queries over the active generation of each read model.

Each query runs in one read transaction that first reads the active generation, so a
rebuild's swap never shows a half-built model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from . import positions as pos
from .ehr import TABLES as EHR_TABLES
from .migrations import prefix
from .store import Store, Tx, select_in

MAX_MERGE_DEPTH = 20  # a merge chain longer than this is data damage, not history
_CHART_ORDER = {
    "encounters": "period_start", "orders": "authored_on", "results": "effective",
    "immunizations": "occurrence", "appointments": "start_at", "documents": "doc_date",
}


@contextlib.contextmanager
def reading(store: Store, projection: str) -> Iterator[tuple[Tx, str]]:
    with store.transaction(lock=False) as tx:
        gen = pos.active(tx, projection, share=True)
        if gen is None:
            raise LookupError(f"the {projection} read model does not exist yet")
        yield tx, prefix(projection, gen)


def _rows(tx: Tx, sql: str, params: tuple[Any, ...] | list[Any], names: list[str]) -> list[dict]:
    out = []
    for row in tx.execute(sql, params):
        item = dict(zip(names, row, strict=True))
        if "body" in item:
            item["resource"] = orjson.loads(item.pop("body"))
        out.append(item)
    return out


# -- EHR -----------------------------------------------------------------------------------
def resolve_patient(tx: Tx, p: str, patient_id: str) -> tuple[str, list[str]]:
    """(surviving id, every id merged into it): follow replaced-by links up, then down."""
    up = tx.execute(
        f"WITH RECURSIVE up(id, depth) AS (SELECT CAST(? AS TEXT), 0 UNION SELECT l.survivor_id, "
        f"up.depth + 1 FROM up JOIN {p}patient_links l ON l.retired_id = up.id "
        f"WHERE up.depth < {MAX_MERGE_DEPTH}) SELECT id FROM up ORDER BY depth DESC, id "
        "LIMIT 1",
        (patient_id,),
    )
    root = up[0][0] if up else patient_id
    down = tx.execute(
        f"WITH RECURSIVE down(id, depth) AS (SELECT CAST(? AS TEXT), 0 UNION SELECT l.retired_id, "
        f"down.depth + 1 FROM down JOIN {p}patient_links l ON l.survivor_id = down.id "
        f"WHERE down.depth < {MAX_MERGE_DEPTH}) SELECT DISTINCT id FROM down",
        (root,),
    )
    return root, sorted({r[0] for r in down} | {root})


def patient_chart(store: Store, patient_id: str) -> dict[str, Any]:
    """A patient's current chart, under the surviving record when it was merged. Records
    that arrived before their patient are included; ``patient`` is None until it arrives."""
    with reading(store, "ehr") as (tx, p):
        root, ids = resolve_patient(tx, p, patient_id)
        chart: dict[str, Any] = {"patient_id": root, "merged_ids": [i for i in ids if i != root]}
        cols = ["id", "version", "event_id", *EHR_TABLES[0].columns]
        found = _rows(tx, f"SELECT {', '.join(cols)} FROM {p}patients WHERE id = ?", (root,),
                      cols)
        chart["patient"] = found[0] if found else None
        for table in EHR_TABLES[1:]:
            cols = ["id", "version", "event_id", *table.columns]
            order = _CHART_ORDER[table.name]
            rows = []
            for chunk_start in range(0, len(ids), 500):
                chunk = ids[chunk_start : chunk_start + 500]
                marks = ", ".join("?" * len(chunk))
                rows += _rows(tx, f"SELECT {', '.join(cols)} FROM {p}{table.name} "
                              f"WHERE patient_id IN ({marks})", chunk, cols)
            chart[table.name] = sorted(rows, key=lambda r, o=order: (_instant(r[o]), r["id"]))
        return chart


def _instant(value: str | None) -> str:
    """A chart date as text that sorts in time order.

    FHIR dateTimes keep the sender's UTC offset (``2008-01-31T15:55:00+02:15``), so as text
    they sort by local clock time across senders; with an offset they are compared in UTC.
    Dates without a time (``2008-01-31``, ``2008-01``) stay as they are: they are prefixes
    of the UTC form, so they sort before the times of their own day.
    """
    if not value or len(value) <= 10:
        return value or ""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return value
    return when.astimezone(UTC).isoformat() if when.tzinfo is not None else value


def result_history(store: Store, result_id: str) -> list[dict[str, Any]]:
    """Every version of a result (Observation or DiagnosticReport), oldest first."""
    with reading(store, "ehr") as (tx, p):
        cols = ["version", "event_id", "event_type", "status", "occurred_at", "payload"]
        rows = _rows(tx, f"SELECT {', '.join(cols)} FROM {p}history WHERE kind = 'results' "
                     "AND key = ? ORDER BY version, event_id", (result_id,), cols)
    for row in rows:
        row["resource"] = orjson.loads(row.pop("payload"))
    return rows


# -- billing -------------------------------------------------------------------------------
def balances(store: Store) -> dict[str, int]:
    """Encounter (or account / patient when the charge names no encounter) -> cents."""
    with reading(store, "billing") as (tx, p):
        rows = tx.execute(
            f"SELECT encounter_key, SUM(amount_cents) FROM {p}ledger GROUP BY encounter_key"
        )
    return {key: int(total) for key, total in rows}


def ledger(store: Store, source_keys: list[str] | None = None) -> list[dict[str, Any]]:
    cols = ["entry_key", "source_key", "version", "kind", "amount_cents", "currency",
            "encounter_key", "code", "occurred_at"]
    sql = f"SELECT {', '.join(cols)} FROM {{p}}ledger"
    with reading(store, "billing") as (tx, p):
        if source_keys is None:
            rows = tx.execute(sql.replace("{p}", p))
        else:
            rows = select_in(tx, sql.replace("{p}", p) + " WHERE source_key IN ({in})",
                             source_keys)
    return sorted((dict(zip(cols, r, strict=True)) for r in rows),
                  key=lambda r: (r["source_key"], r["version"], r["kind"]))


# -- analytics -----------------------------------------------------------------------------
def daily_result_volumes(store: Store) -> list[tuple[str, str, int]]:
    """(day, LOINC code, results) over current result facts with a LOINC code."""
    with reading(store, "analytics") as (tx, p):
        rows = tx.execute(
            f"SELECT day, loinc, COUNT(*) FROM {p}result_facts WHERE loinc IS NOT NULL "
            "AND day IS NOT NULL GROUP BY day, loinc ORDER BY day, loinc"
        )
    return [(d, c, int(n)) for d, c, n in rows]


def abnormal_rates(store: Store) -> list[tuple[str, int, int, float]]:
    """(LOINC, interpreted results, abnormal results, rate), entered-in-error excluded."""
    with reading(store, "analytics") as (tx, p):
        rows = tx.execute(
            f"SELECT loinc, COUNT(*), SUM(abnormal) FROM {p}result_facts WHERE abnormal IS "
            "NOT NULL AND loinc IS NOT NULL AND (status IS NULL OR status NOT IN "
            "('entered-in-error', 'cancelled')) GROUP BY loinc ORDER BY loinc"
        )
    return [(c, int(n), int(a or 0), int(a or 0) / int(n)) for c, n, a in rows]


def encounter_counts_by_class(store: Store) -> dict[str, int]:
    with reading(store, "analytics") as (tx, p):
        rows = tx.execute(
            f"SELECT class_code, COUNT(*) FROM {p}encounter_facts WHERE status IS NULL OR "
            "status NOT IN ('cancelled', 'entered-in-error') GROUP BY class_code"
        )
    return {c or "unknown": int(n) for c, n in rows}
