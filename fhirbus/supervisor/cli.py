"""``fhirbus up`` (run and supervise the platform) and ``fhirbus status`` (one screen)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson

from fhirbus.settings import Settings


def register(sub: Any) -> None:
    up = sub.add_parser(
        "up", help="start and supervise the whole platform (broker, listener, canonicalizer, "
        "CDC, projections, reconciler); Ctrl-C stops it in order",
        description="Logs per process in <state dir>/logs; state in <state dir>/supervisor.json. "
        "Settings: FHIRBUS_SUPERVISOR__* (with_cdc, reconcile_every_s, restart backoff).",
    )
    up.add_argument("--no-cdc", action="store_true", help="do not run CDC (WITH_CDC=no)")
    up.set_defaults(func=_up)

    status = sub.add_parser("status", help="processes, consumer lag, spool and dead-letter "
                            "depth, last reconciliation drift")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--watch", nargs="?", type=float, const=2.0, metavar="SECONDS",
                        help="refresh every SECONDS (default 2) until Ctrl-C")
    status.set_defaults(func=_status)


def _up(args: argparse.Namespace, settings: Settings) -> int:
    from .cdc import plan_cdc
    from .kafka_view import ensure_topics
    from .plan import build_plan, free_port, has_command, port_problem
    from .runner import Supervisor

    if args.no_cdc:
        sup = settings.supervisor.model_copy(update={"with_cdc": "no"})
        settings = settings.model_copy(update={"supervisor": sup})
    refusal = _already_running(settings)
    if refusal:
        print(f"fhirbus up: {refusal}", file=sys.stderr)
        return 1
    port = settings.hl7.port or free_port(settings.hl7.host)
    problem = port_problem(settings.hl7.host, port)
    if problem:
        print(f"fhirbus up: {problem}", file=sys.stderr)
        return 1
    print("fhirbus up: checking CDC sources ...", flush=True)
    cdc = plan_cdc(settings, has_command("cdc", "run"))
    plan = build_plan(settings, cdc, port)
    for what, note in plan.notes.items():
        print(f"fhirbus up: {what}: {note}", flush=True)
    conf = settings.supervisor
    supervisor = Supervisor(
        settings.state_dir.resolve(), plan.specs, backoff_initial_s=conf.restart_backoff_initial_s,
        backoff_max_s=conf.restart_backoff_max_s, stop_timeout_s=conf.stop_timeout_s,
        extra={"cdc": cdc.to_json(), "notes": plan.notes},
        echo=lambda line: print(line, flush=True),
        after_broker=lambda: ensure_topics(settings, cdc.topics),
    )
    return supervisor.run()


def _already_running(settings: Settings) -> str | None:
    from fhirbus.embedded import discovery

    from .state import running

    other = running(settings.state_dir)
    if other is not None:
        return (f"already running for state dir {settings.state_dir} (pid {other.pid}); "
                "stop it (Ctrl-C or kill -TERM that pid) or use another FHIRBUS_STATE_DIR")
    stack = discovery.read(settings.state_dir) if settings.uses_embedded_broker else None
    if stack is not None:
        return (f"an embedded broker started outside `fhirbus up` is running for state dir "
                f"{settings.state_dir} (pid {stack.pid}); stop it first, or use another "
                "FHIRBUS_STATE_DIR")
    return None


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from .screen import render
    from .status import collect

    while True:
        data = collect(settings)
        if args.json:
            sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            if args.watch:
                sys.stdout.write("\x1b[H\x1b[2J")  # clear the screen, cursor home
            sys.stdout.write(render(data) + "\n")
        sys.stdout.flush()
        if not args.watch:
            return 0 if data["supervisor"].get("state") == "running" else 3
        time.sleep(args.watch)
