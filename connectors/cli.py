"""``fhirbus cdc run --source NAME`` and ``fhirbus cdc status [--source NAME]``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import orjson

from fhirbus.settings import ConfigError, Settings

from .sources import EXAMPLE_SOURCES, SourceDeclaration, find_source, load_sources


def register(sub: Any) -> None:
    cdc = sub.add_parser(
        "cdc", help="log-based PostgreSQL change data capture (Debezium-format events)",
        description="Read a logical replication slot and publish Debezium-format change "
        "events to cdc.<source>.<schema>.<table>. See connectors/docs/cdc.md.")
    csub = cdc.add_subparsers(dest="cdc_command", metavar="ACTION", required=True)
    sources_help = ("CDC sources YAML (default: FHIRBUS_CDC__SOURCES_FILE, else the shipped "
                    f"example {EXAMPLE_SOURCES.name} of connectors/examples/labbilling)")
    run = csub.add_parser("run", help="snapshot (first run) then stream one source")
    run.add_argument("--source", required=True, help="source name from the sources file")
    run.add_argument("--sources", type=Path, help=sources_help)
    run.add_argument("--idle-exit", type=float, help="stop after S seconds without changes")
    run.set_defaults(func=_run)
    status = csub.add_parser("status", help="slot, confirmed LSN, lag and snapshot state")
    status.add_argument("--source", help="one source (default: every declared source)")
    status.add_argument("--sources", type=Path, help=sources_help)
    status.set_defaults(func=_status)


def declared_sources(settings: Settings, override: Path | None = None) -> list[SourceDeclaration]:
    path = override or settings.cdc.sources_file or EXAMPLE_SOURCES
    return load_sources(path)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from fhirbus import telemetry

    from .cdc.reader import CdcReader, run

    source = find_source(declared_sources(settings, args.sources), args.source)
    telemetry.configure(settings, service=f"fhirbus-cdc-{source.name}")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    reader = CdcReader(source, settings)
    try:
        stats = run(reader, stop, idle_exit_s=args.idle_exit)
    finally:
        reader.close()
    print(f"cdc {source.name}: {stats.snapshot_rows} snapshot row(s), {stats.changes} "
          f"change(s) in {stats.transactions} transaction(s)", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from .cdc.status import source_status

    sources = declared_sources(settings, args.sources)
    if args.source:
        sources = [find_source(sources, args.source)]
    if not sources:
        raise ConfigError("no CDC sources declared")
    for source in sources:
        print(orjson.dumps(source_status(source, settings)).decode())
    return 0
