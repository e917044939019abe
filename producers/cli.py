"""``fhirbus hl7 listen``: the MLLP listener as a process."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from fhirbus.settings import Settings


def register(sub: Any) -> None:
    hl7 = sub.add_parser("hl7", help="HL7 v2 ingestion")
    hsub = hl7.add_subparsers(dest="hl7_command", metavar="ACTION", required=True)
    listen = hsub.add_parser(
        "listen",
        help="accept HL7 v2 over MLLP; ACK only what is stored (Kafka or the local spool)",
        description="Settings: FHIRBUS_HL7__* (port, limits, TLS, spool path); flags override.",
    )
    listen.add_argument("--host", help="bind address (FHIRBUS_HL7__HOST)")
    listen.add_argument("--port", type=int, help="TCP port, 0 = any free (FHIRBUS_HL7__PORT)")
    listen.add_argument("--listener-id", help="listener id (FHIRBUS_HL7__LISTENER_ID)")
    listen.add_argument("--feed", help="feed id, the raw topic key (FHIRBUS_HL7__FEED)")
    listen.add_argument("--spool", type=Path, help="spool file (FHIRBUS_HL7__SPOOL_PATH)")
    listen.add_argument(
        "--workers", type=int, help="worker processes sharing the port (FHIRBUS_HL7__WORKERS)"
    )
    listen.set_defaults(func=_listen)


def _with_overrides(args: argparse.Namespace, settings: Settings) -> Settings:
    flags = {
        "host": args.host,
        "port": args.port,
        "listener_id": args.listener_id,
        "feed": args.feed,
        "spool_path": args.spool,
        "workers": args.workers,
    }
    update = {k: v for k, v in flags.items() if v is not None}
    if not update:
        return settings
    # Re-validate through the model so a bad flag fails like a bad environment variable.
    hl7 = type(settings.hl7).model_validate({**settings.hl7.model_dump(), **update})
    return settings.model_copy(update={"hl7": hl7})


def _listen(args: argparse.Namespace, settings: Settings) -> int:
    from fhirbus import telemetry

    settings = _with_overrides(args, settings)
    telemetry.configure(settings, service="fhirbus-hl7-listener")
    return asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> int:
    from fhirbus.producers.mllp.app import ListenerApp

    if settings.hl7.workers > 1:
        return await _serve_workers(settings)
    app = ListenerApp(settings)
    host, port = await app.start()
    # Machine-readable readiness line: scripts and tests wait for it (port 0 = chosen here).
    print(f"listening on {host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    print("stopping", file=sys.stderr, flush=True)
    await app.stop()
    return 0


async def _serve_workers(settings: Settings) -> int:
    from fhirbus.producers.mllp.workers import WorkerPool

    pool = await WorkerPool.open(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    host, port = await pool.start()
    print(f"listening on {host}:{port}", flush=True)
    await stop.wait()
    print("stopping", file=sys.stderr, flush=True)
    await pool.stop()
    return 0
