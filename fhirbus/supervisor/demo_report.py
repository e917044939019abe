"""What ``fhirbus demo`` reports after the pipeline settles: read-model row counts, a sample
patient chart, dead-letter entries with their reasons, and a reconciliation run. Each is
gathered by a function that returns plain data; the demo command prints it."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from fhirbus.settings import Settings

from .kafka_view import KafkaView, is_dead_letter
from .plan import PROJECTIONS


def projection_tables(name: str) -> tuple[str, ...]:
    from fhirbus.projections import analytics, billing, ehr

    if name == "ehr":
        spec = ehr.build()
    elif name == "billing":
        spec = billing.build(billing.BillingOptions({}, "USD"))
    else:  # table names do not depend on the key
        spec = analytics.build(analytics.options_from("names-only", "day"))
    return tuple(t.name for t in spec.tables) + tuple(f.name for f in spec.facts)


def read_model_counts(settings: Settings) -> dict[str, dict[str, int] | str]:
    """Rows per table of each read model's active generation (or why there are none)."""
    from fhirbus.projections.app import open_for
    from fhirbus.projections.queries import reading

    out: dict[str, dict[str, int] | str] = {}
    for name in PROJECTIONS:
        store = open_for(name, settings)
        try:
            with reading(store, name) as (tx, p):
                out[name] = {t: int(tx.execute(f"SELECT count(*) FROM {p}{t}")[0][0])
                             for t in projection_tables(name)}
        except LookupError as exc:
            out[name] = str(exc)
        finally:
            store.close()
    return out


def sample_chart(settings: Settings) -> dict[str, Any] | None:
    """The chart of the patient with the most results (None while the EHR is empty)."""
    from fhirbus.projections.app import open_for
    from fhirbus.projections.queries import patient_chart, reading

    store = open_for("ehr", settings)
    try:
        with reading(store, "ehr") as (tx, p):
            rows = tx.execute(f"SELECT r.patient_id, count(*) FROM {p}results r JOIN "
                              f"{p}patients pt ON pt.id = r.patient_id GROUP BY r.patient_id "
                              "ORDER BY count(*) DESC, r.patient_id LIMIT 1")
        return patient_chart(store, rows[0][0]) if rows else None
    except LookupError:
        return None
    finally:
        store.close()


def chart_lines(chart: dict[str, Any]) -> list[str]:
    pt = chart.get("patient") or {}
    lines = [f"patient {chart['patient_id']}: {pt.get('family')}, {pt.get('given')}; born "
             f"{pt.get('birth_date')}; gender {pt.get('gender')}; MRN {pt.get('mrn')}"]
    if chart.get("merged_ids"):
        lines.append(f"  merged from: {', '.join(chart['merged_ids'])}")
    for table, fields in (("encounters", ("class_code", "status", "period_start")),
                          ("orders", ("code", "display", "status")),
                          ("results", ("code", "display", "value", "unit", "interpretation",
                                       "status")),
                          ("immunizations", ("vaccine_code", "display", "occurrence")),
                          ("appointments", ("start_at", "status")),
                          ("documents", ("type_code", "doc_status", "doc_date"))):
        rows = chart.get(table) or []
        if rows:
            lines.append(f"  {table} ({len(rows)}):")
            for row in rows[:6]:
                lines.append("    " + " | ".join(str(row.get(f)) for f in fields
                                                 if row.get(f) is not None))
            if len(rows) > 6:
                lines.append(f"    ... {len(rows) - 6} more")
    return lines


def dead_letters(settings: Settings) -> dict[str, Counter[str]]:
    """Reasons per dead-letter topic, read from the records' headers."""
    out: dict[str, Counter[str]] = {}
    with KafkaView(settings) as view:
        topics = [t for t in view.topics() if is_dead_letter(t)]
        marks = {t: view.watermarks(t) for t in topics}
        conf = view.conf
    consumer = Consumer({**conf, "group.id": "fhirbus-demo-report"})
    try:
        for topic in topics:
            reasons: Counter[str] = Counter()
            for part, (low, high) in marks[topic].items():
                if high > low:
                    _read_reasons(consumer, TopicPartition(topic, part, low), high, reasons)
            if reasons:
                out[topic] = reasons
    finally:
        consumer.close()
    return out


def _read_reasons(consumer: Consumer, tp: TopicPartition, high: int,
                  reasons: Counter[str]) -> None:
    consumer.assign([tp])
    offset = tp.offset
    while offset < high:
        msg = consumer.poll(5.0)
        if msg is None:
            break  # gone (retention) or slow: report what was read
        if msg.error():
            continue
        offset = msg.offset() + 1
        reasons[reason_of(dict(msg.headers() or []))] += 1


def reason_of(headers: dict[str, bytes]) -> str:
    """A dead letter's reason from its headers: the runtime's dlq.* or the listener's."""
    def h(key: str) -> str:
        return (headers.get(key) or b"").decode("utf-8", "replace")

    if "dlq.error_type" in headers:
        message = h("dlq.error_message")
        return f"{h('dlq.error_type')}: {message[:110]}" if message else h("dlq.error_type")
    if "fhirbus.reject_reason" in headers:
        return f"{h('fhirbus.reject_code')} {h('fhirbus.reject_reason')}: " \
               f"{h('fhirbus.error_detail')[:90]}"
    return "(no reason header)"


def reconcile(env: dict[str, str], timeout_s: float = 60.0) -> dict[str, Any]:
    """Run one reconciliation now (``fhirbus reconcile run --json``) when it is installed,
    with the environment ``up`` gives its processes."""
    import os

    from .plan import has_command

    if not has_command("reconcile", "run"):
        return {"note": "not available: this installation has no `fhirbus reconcile run`"}
    try:
        run = subprocess.run([sys.executable, "-m", "fhirbus.cli", "reconcile", "run", "--json"],
                             capture_output=True, timeout=timeout_s, check=False,
                             env={**os.environ, **env})
    except subprocess.TimeoutExpired:
        return {"error": f"`fhirbus reconcile run` did not finish in {timeout_s:.0f} s"}
    if run.returncode not in (0, 1):
        tail = run.stderr.decode(errors="replace").strip().splitlines()[-3:]
        return {"error": f"`fhirbus reconcile run` failed (exit {run.returncode}): "
                         + " / ".join(tail)}
    try:
        return {"report": orjson.loads(run.stdout)}
    except orjson.JSONDecodeError:
        return {"error": "`fhirbus reconcile run --json` printed something that is not JSON"}
