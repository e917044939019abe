"""Which processes ``fhirbus up`` runs, from settings and from the commands this installation
has (a step that has not landed is left out, and ``up`` says so)."""

from __future__ import annotations

import argparse
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path

from fhirbus.settings import Settings

from .cdc import CdcPlan
from .model import ProcessSpec

PROJECTIONS = ("ehr", "billing", "analytics")
CANONICALIZER_GROUP = "fhirbus-canonicalizer"
SECRET_FILE = "analytics.secret"


@dataclass
class Plan:
    specs: list[ProcessSpec]
    notes: dict[str, str] = field(default_factory=dict)


def has_command(*path: str) -> bool:
    """Is ``fhirbus <path...>`` a command here? (Its module may not have landed yet.)"""
    from fhirbus.cli import build_parser

    parser: argparse.ArgumentParser = build_parser()
    for word in path:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)),
                   None)
        if sub is None or word not in sub.choices:
            return False
        parser = sub.choices[word]
    return True


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_problem(host: str, port: int) -> str | None:
    """Why the listener could not bind ``host:port``, found before anything starts."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return (f"the MLLP port {host}:{port} is not available ({exc.strerror}): another "
                    "listener or `fhirbus up` may hold it; stop that, or set FHIRBUS_HL7__PORT "
                    "to a free port (0 picks one)")
    return None


def analytics_secret(settings: Settings) -> tuple[str, str | None]:
    """(secret, note). Analytics tokens need a key; without one, ``up`` makes one and keeps
    it in the state dir, so tokens stay stable across restarts (production: a managed
    secret in FHIRBUS_PROJECTIONS__ANALYTICS_SECRET)."""
    if settings.projections.analytics_secret is not None:
        return settings.projections.analytics_secret.get_secret_value(), None
    path: Path = settings.state_dir / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    note = (f"analytics key from {path} (generated for this state dir; set "
            "FHIRBUS_PROJECTIONS__ANALYTICS_SECRET in production)")
    return path.read_text().strip(), note


def build_plan(settings: Settings, cdc: CdcPlan, mllp_port: int) -> Plan:
    specs: list[ProcessSpec] = []
    notes: dict[str, str] = {"cdc": cdc.note}
    if settings.uses_embedded_broker:
        specs.append(ProcessSpec("broker", "broker", ("broker",), ready="broker"))
    specs.append(ProcessSpec("hl7-listener", "listener",
                             ("hl7", "listen", "--host", settings.hl7.host, "--port",
                              str(mllp_port)), ready="listening"))
    for n in range(1, settings.supervisor.canonicalizers + 1):
        specs.append(ProcessSpec("canonicalizer" if n == 1 else f"canonicalizer-{n}",
                                 "canonicalizer", canonicalizer_argv(cdc),
                                 env=tuple(cdc.env.items()), group=CANONICALIZER_GROUP))
    secret, note = analytics_secret(settings)
    if note:
        notes["analytics"] = note
    for name in PROJECTIONS:
        env = (("FHIRBUS_PROJECTIONS__ANALYTICS_SECRET", secret),) if name == "analytics" else ()
        specs.append(ProcessSpec(f"projection-{name}", "projection", ("project", name), env=env,
                                 group=f"fhirbus-projection-{name}"))
    if cdc.enabled:
        for source in cdc.sources:
            specs.append(ProcessSpec(f"cdc-{source}", "cdc", ("cdc", "run", "--source", source),
                                     env=tuple(cdc.env.items())))
    if has_command("reconcile", "schedule"):
        every = f"{settings.supervisor.reconcile_every_s:g}"
        env = (*cdc.env.items(), ("FHIRBUS_PROJECTIONS__ANALYTICS_SECRET", secret))
        specs.append(ProcessSpec("reconciler", "reconciler",
                                 ("reconcile", "schedule", "--every", every), env=env))
        notes["reconciler"] = f"reconciliation every {every} s"
    else:
        notes["reconciler"] = "no `fhirbus reconcile schedule` in this installation"
    return Plan(specs, notes)


def canonicalizer_argv(cdc: CdcPlan) -> tuple[str, ...]:
    """It reads hl7.raw.v1 and the CDC topics of the sources file in its environment (or,
    without one, every cdc.* topic by regex)."""
    return ("canonicalize",)


def child_env(settings: Settings, supervisor: dict[str, object]) -> dict[str, str]:
    """What a one-off command (``reconcile run``) needs to see what ``up``'s children see:
    the CDC sources file and DSN, and the analytics key."""
    from fhirbus.connectors.sources import EXAMPLE_SOURCES

    from .cdc import example_env

    env: dict[str, str] = {"FHIRBUS_STATE_DIR": str(settings.state_dir)}
    cdc = supervisor.get("cdc")
    sources_file = cdc.get("sources_file") if isinstance(cdc, dict) else None
    if sources_file:
        env["FHIRBUS_CDC__SOURCES_FILE"] = str(sources_file)
        if sources_file == str(EXAMPLE_SOURCES):
            env.update(example_env())
    env["FHIRBUS_PROJECTIONS__ANALYTICS_SECRET"] = analytics_secret(settings)[0]
    return env
