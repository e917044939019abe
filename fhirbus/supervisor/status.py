"""``fhirbus status``: one screen for ops, gathered from the supervisor's state file, Kafka,
the read models' own positions, the listener's spool and the reconciler's reports. Each
part fails on its own: a part that cannot be read says why; the others still show."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson

from fhirbus.settings import Settings

from . import state
from .plan import CANONICALIZER_GROUP, PROJECTIONS


def collect(settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {"state_dir": str(settings.state_dir)}
    out["supervisor"], out["processes"] = _processes(settings.state_dir)
    out["spool"] = _spool(settings)
    out["lag"], out["dead_letters"], out["kafka_error"] = _kafka(settings)
    out["reconciliation"] = last_reconciliation(settings)
    return out


def _processes(state_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    data = state.read(state_dir)
    if not data:
        return {"state": "never started", "hint": "start it with `fhirbus up`"}, []
    alive = state.pid_alive(data.get("pid")) and data.get("state") != "stopped"
    sup = {k: data.get(k) for k in ("pid", "started_at", "updated_at", "mllp")}
    sup["state"] = data.get("state") if alive else "not running"
    sup.update({k: data[k] for k in ("cdc", "notes") if k in data})
    procs = []
    for name, p in data.get("processes", {}).items():
        status = p.get("status")
        if not alive:
            status = "down"
        elif status in ("up", "starting", "stopping") and not state.pid_alive(p.get("pid")):
            status = "down"  # died since the supervisor last looked
        procs.append({"name": name, **p, "status": status})
    return sup, procs


def _spool(settings: Settings) -> dict[str, Any]:
    from fhirbus.producers.mllp.app import spool_path

    path = spool_path(settings)
    if not path.exists():
        return {"depth": 0, "path": str(path), "note": "no spool yet"}
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
        try:
            depth = conn.execute("SELECT count(*) FROM spool").fetchone()[0]
            # Records the broker refused for good: ops must look (the forwarder moved on).
            has_refused = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                                       "AND name = 'refused'").fetchone()
            refused = conn.execute("SELECT count(*) FROM refused").fetchone()[0] \
                if has_refused else 0
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return {"error": f"cannot read the spool {path}: {exc}"}
    return {"depth": int(depth), "refused": int(refused), "path": str(path)}


def _kafka(settings: Settings) -> tuple[dict[str, Any], dict[str, int], str | None]:
    from confluent_kafka import KafkaException

    from fhirbus.kafka.config import NoBrokerError

    from .kafka_view import KafkaView

    try:
        with KafkaView(settings) as view:
            topics = view.topics()
            lag: dict[str, Any] = {}
            raw = [t for t in topics if t == "hl7.raw.v1" or t.startswith("cdc.")]
            lag[CANONICALIZER_GROUP] = view.committed_lag(CANONICALIZER_GROUP, raw)
            for name in PROJECTIONS:
                lag[f"fhirbus-projection-{name}"] = projection_lag(settings, name, view)
            return lag, view.dead_letter_depth(), None
    except NoBrokerError as exc:
        return {}, {}, str(exc)
    except KafkaException as exc:
        return {}, {}, f"Kafka did not answer ({exc}); is `fhirbus up` running?"


def projection_lag(settings: Settings, name: str, view: Any) -> dict[str, Any]:
    """A read model stores its positions with its rows, so they are the truth for its lag
    (the group's committed offsets may trail them)."""
    from fhirbus.projections import positions as pos
    from fhirbus.projections.app import dsn_for, open_for
    from fhirbus.projections.migrations import prefix

    dsn = dsn_for(name, settings)
    if dsn.startswith("sqlite:") and not Path(dsn.split("sqlite://", 1)[-1]).exists():
        return {"note": "read model not created yet"}
    store = open_for(name, settings)
    try:
        with store.transaction(lock=False) as tx:
            gen = pos.active(tx, name)
            stored = pos.load(tx, prefix(name, gen)) if gen is not None else {}
    except Exception as exc:  # a read model being migrated or locked: say so, go on
        return {"error": f"cannot read the {name} read model: {type(exc).__name__}"}
    finally:
        store.close()
    lag = parts = 0
    for topic in projection_topics(name):
        for p, (low, high) in view.watermarks(topic).items():
            lag += high - stored.get((topic, p), low)
            parts += 1
    return {"lag": lag, "partitions": parts, "source": "read model positions"}


def projection_topics(name: str) -> tuple[str, ...]:
    from fhirbus.projections import analytics, billing, ehr

    if name == "ehr":
        return ehr.build().topics
    if name == "billing":
        return billing.build(billing.BillingOptions({}, "USD")).topics
    # The key only salts tokens; the topics do not depend on it.
    return analytics.build(analytics.options_from("status-only", "day")).topics


def last_reconciliation(settings: Settings) -> dict[str, Any]:
    """The newest report the reconciler wrote, with its drift figures."""
    folder = settings.reconcile.report_dir or settings.state_dir / "reconcile" / "reports"
    reports = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime) \
        if folder.is_dir() else []
    if not reports:
        return {"note": f"no reconciliation report yet in {folder}"}
    try:
        report = orjson.loads(reports[-1].read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        return {"error": f"cannot read {reports[-1]}: {exc}"}
    return {"report": str(reports[-1]), **summarize_report(report)}


def summarize_report(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("run_id", "finished_at", "total_drift", "by_class", "by_action")
    out = {k: report[k] for k in keys if k in report}
    checks = report.get("checks")
    if isinstance(checks, list):
        out["compared"] = sum(int(c.get("compared") or 0) for c in checks)
    if report.get("errors"):
        out["errors"] = len(report["errors"])
    return out
