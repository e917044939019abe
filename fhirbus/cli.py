"""The ``fhirbus`` command. Each step registers its own subcommands; imports stay lazy so
``fhirbus --help`` is fast and a missing optional service never breaks unrelated commands."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .settings import ConfigError, Settings, load_settings

# Modules that expose ``register(subparsers) -> None``; each adds its subcommands and sets
# ``func(args, settings) -> int`` on them.
COMMAND_MODULES: tuple[str, ...] = (
    "fhirbus.commands.platform",
    "fhirbus.commands.schemas",
    "fhirbus.commands.demo",
    "fhirbus.producers.cli",
    "fhirbus.consumers.cli",
    "fhirbus.projections.cli",
    "fhirbus.connectors.cli",
    "fhirbus.connectors.debezium.cli",
    "fhirbus.reconciliation.cli",
    "fhirbus.reconciliation.dlq.cli",
    "fhirbus.supervisor.cli",
)

Handler = Callable[[argparse.Namespace, Settings], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fhirbus", description="Kafka-based HL7 v2 / CDC to FHIR event-streaming platform."
    )
    parser.add_argument("--config", type=Path, help="TOML configuration file (env: FHIRBUS_CONFIG)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a step that has not landed yet
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Handler | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"fhirbus: {exc}", file=sys.stderr)
        print("fix the setting(s) above, then run the command again", file=sys.stderr)
        return 2
    try:
        return func(args, settings)
    except ConfigError as exc:
        print(f"fhirbus: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
