"""``fhirbus project ehr|billing|analytics``, ``rebuild NAME``, ``status`` and queries."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from fhirbus.settings import Settings

NAMES = ("ehr", "billing", "analytics")


def register(sub: Any) -> None:
    project = sub.add_parser(
        "project", help="run, rebuild, inspect and query the read models",
        description="Each projection is its own consumer group and process.",
    )
    psub = project.add_subparsers(dest="project_command", metavar="ACTION", required=True)
    for name in NAMES:
        run = psub.add_parser(name, help=f"run the {name} projection (group "
                              f"fhirbus-projection-{name})")
        run.add_argument("--group", help="consumer group (default fhirbus-projection-NAME)")
        run.add_argument("--max-records", type=int, help="stop after N records (tools, tests)")
        run.add_argument("--idle-exit", type=float, help="stop after S seconds without records")
        run.add_argument("--apply-delay", type=float, default=0.0, help=argparse.SUPPRESS)
        run.set_defaults(func=_run, projection=name)

    rebuild = psub.add_parser("rebuild", help="rebuild a read model into new tables, swap "
                              "it in when caught up (the old one keeps serving)")
    rebuild.add_argument("name", choices=NAMES)
    rebuild.add_argument("--timeout", type=float, default=3600.0, help="give up after S s")
    rebuild.add_argument("--keep-old", action="store_true", help="keep the old generation")
    rebuild.set_defaults(func=_rebuild)

    status = psub.add_parser("status", help="generation, positions, lag and counters")
    status.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(NAMES)}")
    status.add_argument("--no-lag", action="store_true", help="do not ask Kafka for lag")
    status.set_defaults(func=_status)

    chart = psub.add_parser("chart", help="a patient's current chart (EHR), as JSON")
    chart.add_argument("patient_id")
    chart.set_defaults(func=_query, query="chart")
    history = psub.add_parser("result-history", help="every version of a result, as JSON")
    history.add_argument("result_id")
    history.set_defaults(func=_query, query="result-history")
    bal = psub.add_parser("balances", help="billing balance per encounter")
    bal.set_defaults(func=_query, query="balances")
    agg = psub.add_parser("aggregates", help="analytics aggregates")
    agg.set_defaults(func=_query, query="aggregates")


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from fhirbus import telemetry

    from . import app
    from .store import StoreUnavailable

    name = args.projection
    app.build_projection(name, settings)  # configuration errors stop here, before Kafka
    telemetry.configure(settings, service=f"fhirbus-projection-{name}")
    try:
        done = app.run(name, settings, max_records=args.max_records,
                       idle_exit_s=args.idle_exit, group=args.group, delay_s=args.apply_delay)
    except StoreUnavailable as exc:
        # At start (mid-batch the runtime waits an outage out): a wrong DSN shows at once,
        # in one line, and whatever supervises the process restarts it.
        print(f"fhirbus: projection {name}: {exc}", file=sys.stderr)
        return 1
    print(f"{name}: projected {done} record(s)", file=sys.stderr)
    return 0


def _rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from fhirbus import telemetry

    from . import app
    from .rebuild import rebuild

    app.build_projection(args.name, settings)
    telemetry.configure(settings, service=f"fhirbus-projection-{args.name}-rebuild")
    report = rebuild(args.name, settings, timeout_s=args.timeout, keep_old=args.keep_old)
    print(report.summary())
    for note in report.notes:
        print(f"  {note}")
    return 0 if report.swapped else 1


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from . import app
    from .status import projection_status

    unknown = sorted(set(args.names) - set(NAMES))
    if unknown:
        print(f"fhirbus: unknown projection(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    for name in args.names or NAMES:
        store = app.open_for(name, settings)
        try:
            print(projection_status(name, settings, store, with_lag=not args.no_lag))
        finally:
            store.close()
    return 0


def _query(args: argparse.Namespace, settings: Settings) -> int:
    from . import app, queries

    owner = {"chart": "ehr", "result-history": "ehr", "balances": "billing",
             "aggregates": "analytics"}[args.query]
    store = app.open_for(owner, settings)
    try:
        if args.query == "chart":
            out: Any = queries.patient_chart(store, args.patient_id)
        elif args.query == "result-history":
            out = queries.result_history(store, args.result_id)
        elif args.query == "balances":
            out = queries.balances(store)
        else:
            out = {"daily_result_volumes": queries.daily_result_volumes(store),
                   "abnormal_rates": queries.abnormal_rates(store),
                   "encounter_counts_by_class": queries.encounter_counts_by_class(store)}
    except LookupError as exc:
        print(f"fhirbus: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0
