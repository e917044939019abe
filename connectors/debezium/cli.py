"""``fhirbus connectors apply|status|restart|delete``: Debezium connectors on Kafka Connect.

One connector per declared CDC source (``FHIRBUS_CDC__SOURCES_FILE``), named
``fhirbus-cdc-<source>``, driven through the Connect REST API at ``FHIRBUS_CONNECT__URL``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from fhirbus.settings import ConfigError, Settings


def register(sub: Any) -> None:
    connectors = sub.add_parser(
        "connectors", help="Debezium CDC connectors on Kafka Connect (production CDC path)",
        description="Generate Debezium PostgreSQL connector configs from the CDC source "
        "declarations and drive the Kafka Connect REST API (FHIRBUS_CONNECT__URL).",
    )
    csub = connectors.add_subparsers(dest="connectors_command", metavar="ACTION", required=True)
    apply = csub.add_parser("apply", help="create or update the connectors (idempotent)")
    _source_arg(apply)
    apply.add_argument("--dry-run", action="store_true",
                       help="print the configs (secrets masked); change nothing")
    apply.add_argument("--password-env", metavar="VAR",
                       help="worker env var holding the database password "
                       "(default FHIRBUS_CDC_<SOURCE>_PASSWORD)")
    apply.set_defaults(func=_apply)
    status = csub.add_parser("status", help="connector and task states (exit 1 unless all run)")
    _source_arg(status)
    status.set_defaults(func=_status)
    restart = csub.add_parser("restart", help="restart the connectors and their tasks")
    _source_arg(restart)
    restart.add_argument("--only-failed", action="store_true",
                         help="restart only the failed connector/tasks")
    restart.set_defaults(func=_restart)
    delete = csub.add_parser("delete", help="delete the connectors (the replication slot stays)")
    _source_arg(delete)
    delete.set_defaults(func=_delete)


def _source_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", metavar="NAME", help="one declared source (default: all)")


def _sources(args: argparse.Namespace, settings: Settings) -> list[Any]:
    from fhirbus.connectors.sources import EXAMPLE_SOURCES, find_source, load_sources

    path = settings.cdc.sources_file
    if path is None:
        raise ConfigError("no CDC sources declared: set FHIRBUS_CDC__SOURCES_FILE to a sources "
                          f"YAML file (example: {EXAMPLE_SOURCES})")
    sources = load_sources(path)
    return [find_source(sources, args.source)] if args.source else sources


def _client(settings: Settings, sources: list[Any]) -> Any:
    from fhirbus import telemetry
    from fhirbus.connectors.debezium.config import parse_dsn
    from fhirbus.connectors.debezium.rest import ConnectClient

    telemetry.configure_logging(settings.log_level, settings.log_format)
    # DSN passwords never go to Connect, but scrub them from any message just in case.
    secrets = [p for s in sources if (p := _dsn_password(s.dsn))]
    for source in sources:
        parse_dsn(source)  # a bad DSN stops here, before any request
    return ConnectClient(settings.connect, secrets=secrets)


def _apply(args: argparse.Namespace, settings: Settings) -> int:
    from fhirbus.connectors.debezium.config import (
        connector_config,
        connector_name,
        masked,
        parse_dsn,
        password_env_var,
    )

    sources = _sources(args, settings)
    configs = {connector_name(s): connector_config(s, args.password_env) for s in sources}
    for source in sources:
        if parse_dsn(source).dsn_has_password:
            var = args.password_env or password_env_var(source)
            print(f"note: {source.name}: the DSN's password is not copied into the connector "
                  f"config; the Connect worker reads it from its environment variable {var}",
                  file=sys.stderr)
    if args.dry_run:
        shown = [{"name": n, "config": masked(c)} for n, c in configs.items()]
        print(json.dumps(shown if len(shown) > 1 else shown[0], indent=2))
        return 0
    client = _client(settings, sources)
    return _each(configs, lambda name, config: f"{name}: {client.apply(name, config)}")


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from fhirbus.connectors.debezium.config import connector_name
    from fhirbus.connectors.debezium.rest import ConnectError

    sources = _sources(args, settings)
    client = _client(settings, sources)
    healthy = True
    for source in sources:
        name = connector_name(source)
        try:
            state = client.status(name)
        except ConnectError as exc:
            return _fail(exc)
        lines, running = _describe(name, state)
        healthy = healthy and running
        print("\n".join(lines))
    return 0 if healthy else 1


def _restart(args: argparse.Namespace, settings: Settings) -> int:
    from fhirbus.connectors.debezium.config import connector_name

    sources = _sources(args, settings)
    client = _client(settings, sources)

    def one(name: str, _config: Any) -> str:
        state = client.restart(name, include_tasks=True, only_failed=args.only_failed)
        return "\n".join(_describe(name, state)[0]) if state else f"{name}: restart requested"

    return _each({connector_name(s): None for s in sources}, one)


def _delete(args: argparse.Namespace, settings: Settings) -> int:
    from fhirbus.connectors.debezium.config import connector_name

    sources = _sources(args, settings)
    client = _client(settings, sources)

    def one(name: str, _config: Any) -> str:
        if not client.delete(name):
            return f"{name}: absent"
        return (f"{name}: deleted (its replication slot and publication stay: drop them in "
                "the source database once nothing will resume from them, or WAL piles up)")

    return _each({connector_name(s): None for s in sources}, one)


def _each(items: dict[str, Any], action: Any) -> int:
    """Run ``action`` per connector; report every failure, go on with the rest."""
    from fhirbus.connectors.debezium.rest import ConnectError

    failed = 0
    for name, value in items.items():
        try:
            print(action(name, value))
        except ConnectError as exc:
            failed += 1
            _fail(exc)
    return 1 if failed else 0


def _fail(exc: BaseException) -> int:
    print(f"fhirbus connectors: {exc}", file=sys.stderr)
    return 1


def _describe(name: str, state: dict[str, Any] | None) -> tuple[list[str], bool]:
    if state is None:
        return [f"{name}: not deployed (run `fhirbus connectors apply`)"], False
    connector = state.get("connector", {})
    tasks = state.get("tasks", [])
    lines = [f"{name}: connector {connector.get('state', '?')} "
             f"on {connector.get('worker_id', '?')}"]
    for task in tasks:
        line = f"  task {task.get('id')}: {task.get('state')} on {task.get('worker_id', '?')}"
        if task.get("trace"):
            # Only the exception line: deeper frames of a Debezium trace may quote row data.
            line += f" ({str(task['trace']).splitlines()[0][:200]})"
        lines.append(line)
    states = [connector.get("state")] + [t.get("state") for t in tasks]
    return lines, bool(tasks) and all(s == "RUNNING" for s in states)


def _dsn_password(dsn: str) -> str | None:
    from psycopg.conninfo import conninfo_to_dict

    try:
        return conninfo_to_dict(dsn).get("password")
    except Exception:
        return None
