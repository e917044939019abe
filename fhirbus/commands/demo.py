"""``fhirbus demo``: push sample traffic through a running ``fhirbus up`` and say what happened.

HL7 v2 goes over MLLP (the corpus, plus a message that is not HL7 and one of a type nothing
maps); when the platform runs CDC, a scripted series of changes goes into the example
lab/billing database. Then it waits for the pipeline to settle and reports: messages
accepted and rejected, canonical events per topic, read-model counts, a sample patient
chart, dead letters with their reasons, and a reconciliation run.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import orjson

from ..settings import Settings

DEFAULT_CORPUS = Path(
    os.environ.get("FHIRBUS_CORPUS") or Path(__file__).resolve().parents[2].parent / "shared"
    / "corpus") / "hl7v2"
# Always sent, so the dead-letter sections have entries whatever the corpus holds.
NOT_HL7 = ("demo/not-hl7", b"this is not an HL7 message\r")
UNMAPPABLE = ("demo/unmappable-ZZZ", b"MSH|^~\\&|DEMO|DEMO|FHIRBUS|FHIRBUS|20250101120000||"
              b"ZZZ^Z99^ZZZ_Z99|DEMO-UNMAPPABLE-1|P|2.5.1\rZZZ|1|a message type nothing maps\r")


def register(sub: Any) -> None:
    demo = sub.add_parser(
        "demo", help="send sample HL7 (and CDC changes) through a running `fhirbus up`, report",
        description="Run `fhirbus up` first (another terminal), or pass --port for a listener "
        "started on its own. `--reset-cdc` (with `fhirbus up` stopped) drops the example CDC "
        "database and its replication slot.")
    demo.add_argument("--host", help="listener host (default: from `fhirbus up`)")
    demo.add_argument("--port", type=int, help="listener port (default: from `fhirbus up`)")
    demo.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="HL7 v2 files")
    demo.add_argument("--timeout", type=float, default=90.0,
                      help="seconds to wait for the pipeline to settle")
    demo.add_argument("--no-cdc", action="store_true", help="skip the CDC changes")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.add_argument("--reset-cdc", action="store_true",
                      help="drop the example CDC database and slot, then exit")
    demo.set_defaults(func=_demo)


def corpus_messages(root: Path) -> list[tuple[str, bytes]]:
    """(label, bytes) per message: a file holding several messages (a batch) is split into
    them, as a sender would send them; files under invalid/ go as they are."""
    from fhirbus.hl7.parser import HL7ParseError, split_batch

    out: list[tuple[str, bytes]] = []
    for path in sorted(root.rglob("*.hl7")):
        raw = path.read_bytes()
        try:
            parts = [raw] if path.parent.name == "invalid" else split_batch(raw)
        except HL7ParseError:
            parts = [raw]  # the listener must reject it; sending it is the point
        out += [(f"{path.parent.name}/{path.name}", p) for p in parts]
    return out


def demo_messages(root: Path) -> list[tuple[str, bytes]]:
    return [*corpus_messages(root), NOT_HL7, UNMAPPABLE]


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from fhirbus.supervisor import demo_flow

    if args.reset_cdc:
        return demo_flow.reset_cdc(settings)
    if not args.corpus.is_dir():
        print(f"fhirbus demo: corpus not found at {args.corpus}; pass --corpus DIR (a folder "
              "of HL7 v2 files) or set FHIRBUS_CORPUS", file=sys.stderr)
        return 2
    target = demo_flow.find_listener(settings, args.host, args.port)
    if isinstance(target, str):
        print(f"fhirbus demo: {target}", file=sys.stderr)
        return 1
    summary: dict[str, Any] = {"mllp": f"{target[0]}:{target[1]}"}
    sent = demo_flow.send_hl7(target, demo_messages(args.corpus))
    if isinstance(sent, str):
        print(f"fhirbus demo: {sent}", file=sys.stderr)
        return 1
    summary["messages"] = sent
    summary["cdc"] = demo_flow.cdc_changes(settings, skip=args.no_cdc)
    settled = demo_flow.settle(settings, summary["cdc"], args.timeout)
    summary["settled"] = settled
    summary.update(demo_flow.gather(settings))
    if args.json:
        sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print_summary(summary)
    return 0 if settled.get("ok") else 1


def print_summary(s: dict[str, Any]) -> None:
    from fhirbus.supervisor.demo_report import chart_lines

    m = s["messages"]
    _head("HL7 v2 messages over MLLP")
    print(f"  {m['sent']} sent to {s['mllp']}: {m['accepted']} accepted, {m['rejected']} "
          f"rejected  (ACK codes: {_codes(m['codes'])})")
    _head("CDC changes (PostgreSQL)")
    cdc = s["cdc"]
    print(f"  {cdc['note']}")
    for step in cdc.get("steps", []):
        print(f"    {step}")
    canonical = {t: n for t, n in s["topics"].items() if t.startswith("fhir.")}
    _head(f"Canonical events per topic ({sum(canonical.values())} in all)")
    for topic, n in canonical.items():
        print(f"  {topic:38} {n}")
    _head("Input records (raw HL7 and CDC change events)")
    for topic, n in s["topics"].items():
        if topic == "hl7.raw.v1" or topic.startswith("cdc."):
            print(f"  {topic:38} {n}")
    _head("Read models (rows per table)")
    for name, tables in s["read_models"].items():
        shown = tables if isinstance(tables, str) else \
            ", ".join(f"{t} {n}" for t, n in tables.items())
        print(f"  {name:10} {shown}")
    _head("Sample patient chart (EHR read model)")
    for line in chart_lines(s["chart"]) if s["chart"] else ["  (no patient with results yet)"]:
        print(f"  {line}")
    _head("Dead letters, with their reasons")
    for topic, reasons in s["dead_letters"].items():
        print(f"  {topic} ({sum(reasons.values())}):")
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            print(f"    {n:4} x {reason}")
    if not s["dead_letters"]:
        print("  (none)")
    _head("Reconciliation")
    for line in _reconciliation(s["reconciliation"]):
        print(f"  {line}")
    if not s["settled"].get("ok"):
        print(f"\n{s['settled']['note']}")


def _head(title: str) -> None:
    print(f"\n== {title}")


def _codes(codes: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(codes.items()))


def _reconciliation(rec: dict[str, Any]) -> list[str]:
    if "report" not in rec:
        return [rec.get("note") or rec.get("error") or "no report"]
    report = rec["report"]
    if not isinstance(report, dict):
        return [str(report)]
    lines = [f"run {report.get('run_id')}: total drift {report.get('total_drift')} "
             f"in {report.get('duration_s')} s"]
    for check in report.get("checks") or []:
        notes = "; ".join(check.get("notes") or [])
        lines.append(f"  {check.get('name'):22} compared {check.get('compared'):>5}, "
                     f"drift {check.get('drift')}" + (f"  ({notes})" if notes else ""))
    for key in ("by_class", "by_action"):
        if report.get(key):
            lines.append(f"  {key}: {orjson.dumps(report[key]).decode()}")
    lines += [f"  error: {e}" for e in report.get("errors") or []]
    return lines

