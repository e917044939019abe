"""The steps of ``fhirbus demo``: find the platform, send, change the CDC source, wait for the
pipeline to settle (with progress), gather the report. Failures come back as sentences that
say what failed, why and what to do next."""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from typing import Any

from fhirbus.settings import Settings

from . import state
from .cdc import EXAMPLE_SOURCE, example_env

SETTLE_POLL_S = 1.0
STABLE_POLLS = 2  # unchanged counts and zero lag this many polls in a row = settled


def find_listener(settings: Settings, host: str | None, port: int | None) -> tuple[str, int] | str:
    if port:
        return host or "127.0.0.1", port
    running = state.running(settings.state_dir)
    if running is None:
        return (f"no `fhirbus up` is running for state dir {settings.state_dir}: start it "
                "first (e.g. in another terminal), or pass --port for a listener of your own")
    if running.mllp is None:
        return "`fhirbus up` is still starting (no MLLP address yet); try again in a moment"
    return host or running.mllp[0], running.mllp[1]


class Progress:
    """One self-overwriting line on a terminal; a line every few seconds otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def show(self, text: str, force: bool = False) -> None:
        if self.tty:
            sys.stderr.write(f"\r\x1b[K{text}")
        elif force or time.monotonic() - self.last >= 5:
            sys.stderr.write(text + "\n")
            self.last = time.monotonic()
        sys.stderr.flush()

    def done(self, text: str) -> None:
        if self.tty:
            sys.stderr.write("\r\x1b[K")
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


def send_hl7(target: tuple[str, int], messages: list[tuple[str, bytes]]) -> dict[str, Any] | str:
    from fhirbus.producers.mllp.client import MllpClient, ack_code

    host, port = target
    codes: Counter[str] = Counter()
    progress = Progress()
    try:
        with MllpClient(host, port) as client:
            for i, (_label, raw) in enumerate(messages, 1):
                codes[ack_code(client.send(raw)) or "no MSA"] += 1
                progress.show(f"sending HL7 v2 over MLLP to {host}:{port}: {i}/{len(messages)}")
    except OSError as exc:
        return (f"cannot send to the MLLP listener at {host}:{port} ({exc}); check it with "
                "`fhirbus status` (is hl7-listener up?) and see its log in <state dir>/logs")
    accepted = codes.get("AA", 0) + codes.get("CA", 0)
    progress.done(f"sent {len(messages)} HL7 v2 messages to {host}:{port}")
    return {"sent": len(messages), "accepted": accepted, "rejected": len(messages) - accepted,
            "codes": dict(sorted(codes.items()))}


def _example_source(settings: Settings, sources_file: str | None) -> Any:
    from pathlib import Path

    from fhirbus.connectors.sources import EXAMPLE_SOURCES, load_sources

    env = example_env() if sources_file in (None, str(EXAMPLE_SOURCES)) else {}
    os.environ.update({k: v for k, v in env.items() if k not in os.environ})
    path = Path(sources_file) if sources_file else settings.cdc.sources_file or EXAMPLE_SOURCES
    return next((s for s in load_sources(path) if s.name == EXAMPLE_SOURCE), None)


def cdc_changes(settings: Settings, skip: bool) -> dict[str, Any]:
    """Apply the scripted changes when ``fhirbus up`` runs CDC for the example source."""
    import psycopg

    from . import demo_cdc

    running = state.running(settings.state_dir)
    cdc = (running.data.get("cdc") if running else None) or {}
    if skip:
        return {"applied": 0, "note": "skipped (--no-cdc)"}
    if not cdc.get("enabled"):
        return {"applied": 0, "note": cdc.get("note") or "CDC is not running"}
    source = _example_source(settings, cdc.get("sources_file"))
    if source is None:
        return {"applied": 0, "note": f"CDC runs, but not for the example source "
                f"{EXAMPLE_SOURCE!r} the demo's changes are written for"}
    before = _cdc_records(settings)
    try:
        script = demo_cdc.apply(source.dsn)
    except psycopg.Error as exc:
        return {"applied": 0, "note": f"could not apply the demo's changes to the example "
                f"database ({type(exc).__name__}: {str(exc).strip()[:200]}); check "
                "PostgreSQL is up and run the demo again"}
    return {"applied": script.changes, "records_before": before, "source": source.name,
            "run": script.run,
            "note": f"applied {script.changes} changes in {len(script.steps)} transactions to "
                    f"the example database (demo run {script.run}):",
            "steps": [what for what, _ in script.steps]}


def _cdc_records(settings: Settings) -> int:
    from .kafka_view import KafkaView

    with KafkaView(settings) as view:
        return sum(view.counts("cdc.").values())


def snapshot(settings: Settings) -> tuple[dict[str, int], dict[str, Any]]:
    from .kafka_view import KafkaView
    from .status import _kafka

    with KafkaView(settings) as view:
        counts = view.counts()
    lag, _, error = _kafka(settings)
    if error:
        raise RuntimeError(error)
    return counts, lag


def settle(settings: Settings, cdc: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Poll until every group's lag is zero and no topic grows (and the CDC changes have
    reached Kafka); a timeout says which group still lags."""
    progress = Progress()
    start = time.monotonic()
    cdc_wanted = cdc.get("records_before", 0) + cdc.get("applied", 0)
    previous: dict[str, int] | None = None
    stable = 0
    lag: dict[str, Any] = {}
    while time.monotonic() - start < timeout_s:
        try:
            counts, lag = snapshot(settings)
        except Exception as exc:  # the broker went away mid-demo: say so, stop waiting
            return {"ok": False, "note": f"lost the platform while waiting ({exc}); see "
                    "`fhirbus status` and the logs in <state dir>/logs"}
        cdc_done = sum(n for t, n in counts.items() if t.startswith("cdc.")) >= cdc_wanted
        behind = {g: v.get("lag", 0) for g, v in lag.items() if v.get("lag")}
        stable = stable + 1 if counts == previous and not behind and cdc_done else 0
        previous = counts
        total = sum(behind.values())
        progress.show(f"waiting for the pipeline to settle: lag {total}, "
                      f"{sum(counts.values())} records, {time.monotonic() - start:.0f} s")
        if stable >= STABLE_POLLS:
            progress.done(f"pipeline settled in {time.monotonic() - start:.1f} s")
            return {"ok": True, "seconds": round(time.monotonic() - start, 1)}
        time.sleep(SETTLE_POLL_S)
    behind = {g: v.get("lag") for g, v in lag.items() if v.get("lag")}
    note = (f"the pipeline did not settle within {timeout_s:.0f} s (still lagging: "
            f"{behind or 'none, but records kept arriving'}); the figures below are partial. "
            "See `fhirbus status` for a process that is down, and its log in <state dir>/logs; "
            "or wait longer with --timeout")
    progress.done(note)
    return {"ok": False, "note": note}


def gather(settings: Settings) -> dict[str, Any]:
    from . import demo_report
    from .kafka_view import KafkaView
    from .plan import child_env

    running = state.running(settings.state_dir)

    with KafkaView(settings) as view:
        topics = {t: n for t, n in view.counts().items() if n}
    return {
        "topics": topics,
        "read_models": demo_report.read_model_counts(settings),
        "chart": demo_report.sample_chart(settings),
        "dead_letters": {t: dict(r) for t, r in demo_report.dead_letters(settings).items()},
        "reconciliation": demo_report.reconcile(child_env(settings,
                                                          running.data if running else {})),
    }


def reset_cdc(settings: Settings) -> int:
    """Drop the example database and its slot (a slot left behind retains WAL forever)."""
    from .cdc import drop_example

    if state.running(settings.state_dir) is not None:
        print("fhirbus demo: `fhirbus up` is running for this state dir and its CDC reader "
              "holds the slot; stop it first (Ctrl-C), then run --reset-cdc again",
              file=sys.stderr)
        return 1
    source = _example_source(settings, None)
    if source is None:
        print(f"fhirbus demo: no source named {EXAMPLE_SOURCE!r} in the CDC sources file; "
              "nothing to reset", file=sys.stderr)
        return 1
    try:
        dropped = drop_example(source.dsn, [source.slot])
    except Exception as exc:  # psycopg errors and an active slot: both told to the user
        print(f"fhirbus demo: could not reset the example CDC database: {exc}", file=sys.stderr)
        return 1
    print(f"reset: dropped {', '.join(dropped)}" if dropped else "reset: nothing to drop")
    return 0
