"""The ``fhirbus status`` screen: the collected status as text for people."""

from __future__ import annotations

from typing import Any


def render(status: dict[str, Any]) -> str:
    lines = [f"fhirbus status  (state dir {status['state_dir']})", ""]
    lines += _processes(status["supervisor"], status["processes"])
    lines += ["", "consumer lag per group:"]
    if status.get("kafka_error"):
        lines.append(f"  unavailable: {status['kafka_error']}")
    for group, lag in status["lag"].items():
        lines.append(f"  {group:30} {_lag(lag)}")
    spool = status["spool"]
    lines += ["", f"listener spool depth: {spool.get('depth', '?')}"
              + (f", refused by the broker: {spool['refused']} (see the spool's refused "
                 "table)" if spool.get("refused") else "")
              + (f"  ({spool['error']})" if "error" in spool else "")]
    lines += ["", "dead letters per topic:"]
    if not status["dead_letters"] and not status.get("kafka_error"):
        lines.append("  (no dead-letter topics)")
    for topic, depth in status["dead_letters"].items():
        lines.append(f"  {topic:30} {depth}")
    lines += ["", "last reconciliation:", "  " + _reconciliation(status["reconciliation"])]
    return "\n".join(lines)


def _processes(sup: dict[str, Any], procs: list[dict[str, Any]]) -> list[str]:
    head = f"supervisor: {sup.get('state')}"
    if sup.get("pid") and sup.get("state") != "not running":
        head += f" (pid {sup['pid']}, since {sup.get('started_at')}, MLLP {sup.get('mllp')})"
    if sup.get("hint"):
        head += f"; {sup['hint']}"
    lines = [head]
    if procs:
        lines.append(f"  {'process':24} {'status':11} {'pid':>8} {'restarts':>8}  last exit")
    for p in procs:
        status = p["status"]
        code = p.get("last_exit_code")
        lines.append(f"  {p['name']:24} {status:11} {p.get('pid') or '-':>8} "
                     f"{p.get('restarts', 0):>8}  {'-' if code is None else code}")
    cdc = sup.get("cdc")
    if isinstance(cdc, dict) and cdc.get("note"):
        lines.append(f"  cdc: {cdc['note']}")
    return lines


def _lag(lag: dict[str, Any]) -> str:
    if "error" in lag:
        return f"unavailable: {lag['error']}"
    if "note" in lag:
        return lag["note"]
    return f"{lag['lag']:>8}  over {lag['partitions']} partition(s), from {lag['source']}"


def _reconciliation(rec: dict[str, Any]) -> str:
    if "error" in rec:
        return f"unavailable: {rec['error']}"
    if "note" in rec:
        return rec["note"]
    fields = {k: v for k, v in rec.items() if k != "report"}
    return ", ".join(f"{k}={v}" for k, v in fields.items()) + f"  ({rec['report']})"
