"""``fhirbus reconcile run|schedule|worklist``."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import orjson

from fhirbus.settings import ConfigError, Settings

CHECKS = ("cdc", "canonical", "raw")


def _every(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError("expected a duration like 30s, 5m, 1h or 500ms")
    value, unit = float(match.group(1)), match.group(2) or "s"
    seconds = value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    if seconds <= 0:
        raise argparse.ArgumentTypeError("the interval must be positive")
    return seconds


def register(sub: Any) -> None:
    rec = sub.add_parser("reconcile", help="detect and repair drift (sources, canonical "
                         "topics, read models); the review worklist")
    rsub = rec.add_subparsers(dest="reconcile_command", metavar="ACTION", required=True)
    run = rsub.add_parser("run", help="one reconciliation run: report, repair, worklist")
    sched = rsub.add_parser("schedule", help="a run every --every until SIGTERM")
    sched.add_argument("--every", type=_every, default=60.0, help="interval (default 60s)")
    sched.add_argument("--max-runs", type=int, help=argparse.SUPPRESS)
    for p in (run, sched):
        p.add_argument("--checks", nargs="+", choices=CHECKS, default=list(CHECKS))
        p.add_argument("--projections", nargs="+", choices=("ehr", "billing", "analytics"))
        p.add_argument("--canonicalizer-group", default=None,
                       help="consumer group whose committed raw offsets bound the raw check")
        p.add_argument("--dry-run", action="store_true",
                       help="detect and report only: no replay, no worklist items")
    run.add_argument("--json", action="store_true", help="print the JSON report")
    run.set_defaults(func=_run)
    sched.set_defaults(func=_schedule)

    wl = rsub.add_parser("worklist", help="list, resolve and replay review items")
    for p in (run, sched, wl):  # a raw replay maps the way the canonicalizer does
        p.add_argument("--site-config", type=Path,
                       help="the canonicalizer's site configuration (TOML), for raw replays")
    wl.add_argument("action", nargs="?", default="list", choices=("list", "resolve", "replay"))
    wl.add_argument("item", nargs="?", type=int, help="item id (resolve, replay)")
    wl.add_argument("--status", default="open", choices=("open", "resolved", "replayed", "all"))
    wl.add_argument("--note", help="why it was resolved (resolve)")
    wl.set_defaults(func=_worklist)


def _kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from fhirbus.consumers.canonicalizer import load_site_config
    from fhirbus.consumers.canonicalizer.app import GROUP_ID

    return {"canonicalizer_group": args.canonicalizer_group or GROUP_ID,
            "repair": not args.dry_run, "projections": args.projections,
            "site": load_site_config(args.site_config)}


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from fhirbus import telemetry

    from .runner import run_once

    kwargs = _kwargs(args)  # a bad site configuration stops here, before any run
    telemetry.configure(settings, service="fhirbus-reconciler")
    report = run_once(settings, args.checks, **kwargs)
    if args.json:
        sys.stdout.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode()
                         + "\n")
    else:
        print(report.summary())
    return 1 if report.errors else 0


def _schedule(args: argparse.Namespace, settings: Settings) -> int:
    from fhirbus import telemetry

    from .runner import schedule

    kwargs = _kwargs(args)
    telemetry.configure(settings, service="fhirbus-reconciler")
    schedule(settings, args.every, args.checks, max_runs=args.max_runs, **kwargs)
    return 0


def _worklist(args: argparse.Namespace, settings: Settings) -> int:
    from .worklist import Worklist

    if args.action != "list" and args.item is None:
        raise ConfigError(f"`fhirbus reconcile worklist {args.action}` needs an item id")
    wl = Worklist.open(settings)
    try:
        if args.action == "list":
            items = wl.items(None if args.status == "all" else args.status)
            for item in items:
                print(orjson.dumps(item.to_json()).decode())
            print(f"{len(items)} item(s)", file=sys.stderr)
        elif args.action == "resolve":
            wl.set_status(args.item, "resolved", args.note)
            print(f"item {args.item} resolved")
        else:
            from fhirbus.consumers.canonicalizer import load_site_config

            from .replay import replay_item

            print(replay_item(settings, wl, args.item, load_site_config(args.site_config)))
    except LookupError as exc:
        print(f"fhirbus: {exc}", file=sys.stderr)
        return 1
    finally:
        wl.close()
    return 0
