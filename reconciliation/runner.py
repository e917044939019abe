"""One reconciliation run: the checks, the repairs (through events), the worklist, the
JSON report, the metrics. ``schedule`` repeats runs until SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from fhirbus import telemetry
from fhirbus.consumers.canonicalizer import SiteConfig
from fhirbus.consumers.canonicalizer.app import GROUP_ID as CANONICALIZER_GROUP
from fhirbus.kafka.config import producer_config, resolve_registry_url
from fhirbus.kafka.producer import Producer
from fhirbus.schemas.envelope import CanonicalEvent
from fhirbus.schemas.serde import EnvelopeSerde, registry_client
from fhirbus.schemas.topics import CANONICAL_RESOURCES, canonical_topic
from fhirbus.settings import Settings

from .model import Drift, RunReport, new_run_id, risk_for
from .worklist import Worklist

log = logging.getLogger(__name__)
CHECKS = ("cdc", "canonical", "raw")


class Metrics:
    def __init__(self) -> None:
        m = telemetry.meter("fhirbus.reconciliation")
        self.drift = m.create_counter("fhirbus.reconcile.drift", unit="{record}",
                                      description="drift found, by class, check and risk")
        self.actions = m.create_counter("fhirbus.reconcile.actions", unit="{record}")
        self.duration = m.create_histogram("fhirbus.reconcile.run_duration", unit="s")
        self.converge = m.create_histogram(
            "fhirbus.reconcile.time_to_converge", unit="s",
            description="from the first run that saw drift to the next run that saw none")

    def record(self, report: RunReport) -> None:
        for d in report.drift:
            self.drift.add(1, {"drift_class": d.drift_class, "check": d.check.split(":")[0],
                               "risk": d.risk})
            self.actions.add(1, {"action": d.action})
        self.duration.record(report.duration_s)
        if report.converge_seconds is not None:
            self.converge.record(report.converge_seconds)


@dataclass
class Actor:
    """Turns drift into actions: low risk with a repair event -> published with causation
    = the run; high risk, or nothing to replay -> the worklist."""

    settings: Settings
    run_id: str
    worklist: Worklist
    repair: bool = True
    site: SiteConfig | None = None  # raw replays map as the canonicalizer does
    _producer: Producer | None = None
    _serde: EnvelopeSerde | None = None
    _futures: list[Any] = field(default_factory=list)
    raw_to_replay: list[Any] = field(default_factory=list)

    def handle(self, drift: Drift, events: Sequence[CanonicalEvent] = (),
               raw: Any = None) -> Drift:
        drift.risk = risk_for(self.settings.reconcile.risk, drift.resource_type)
        if not self.repair:
            return drift
        if drift.risk == "high" or not (events or raw is not None):
            drift.provenance["worklist_id"] = self.worklist.add(self.run_id, drift)
            drift.action = "worklisted"
        elif raw is not None:
            self.raw_to_replay.append(raw)
            drift.action = "reprocessed"
        else:
            self.publish([e.with_causation(self.run_id) for e in events])
            drift.action = "replayed"
        return drift

    def publish(self, events: Sequence[CanonicalEvent]) -> None:
        if self._producer is None:
            self._producer = Producer(producer_config(self.settings))
            self._serde = EnvelopeSerde(registry_client(resolve_registry_url(self.settings)))
        assert self._serde is not None
        for e in events:
            topic = canonical_topic(e.resource_type)
            headers = [("fhirbus.reconcile_run", self.run_id.encode()),
                       ("fhirbus.event_type", e.event_type.encode())]
            self._futures.append(self._producer.send(
                topic, self._serde.serialize(e, topic), e.key, headers))

    def finish(self) -> None:
        """Wait for every repair event: a run only reports 'replayed' once it is durable."""
        try:
            for future in self._futures:
                future.result(timeout=60)
        finally:
            if self._producer is not None:
                self._producer.close()
        if self.raw_to_replay:
            from .raw_replay import replay_records

            replay_records(self.settings, self.raw_to_replay, self.site)


def run_once(settings: Settings, checks: Sequence[str] = CHECKS, *,
             canonicalizer_group: str = CANONICALIZER_GROUP, repair: bool = True,
             projections: Sequence[str] | None = None,
             site: SiteConfig | None = None) -> RunReport:
    from . import checks as ck

    report = RunReport(new_run_id(), datetime.now(UTC))
    worklist = Worklist.open(settings)
    actor = Actor(settings, report.run_id, worklist, repair, site)
    index = None
    try:
        if "cdc" in checks:
            report.checks.extend(ck.cdc_checks(settings, actor))
        if "canonical" in checks or "raw" in checks:
            index = ck.load_index(settings, [canonical_topic(r) for r in CANONICAL_RESOURCES])
        if "canonical" in checks:
            report.checks.extend(ck.canonical_checks(settings, actor, index, projections))
        if "raw" in checks:
            report.checks.append(ck.raw_check(settings, actor, index, canonicalizer_group))
        actor.finish()
    except Exception as exc:  # a run reports what failed; the schedule carries on
        # The type only: report.errors is printed, stored and shown by `fhirbus status`,
        # and a database error or a KeyError can quote a row value or a patient key.
        report.errors.append(_error_summary(exc))
        log.error("reconcile run failed", extra={"run_id": report.run_id,
                                                 "error_type": type(exc).__name__})
        log.debug("reconcile run failed", exc_info=True)
    report.finished_at = datetime.now(UTC)
    try:
        _close_run(settings, report, worklist)
    finally:
        worklist.close()
    return report


def _error_summary(exc: BaseException) -> str:
    """What failed, without the exception's text; a database error keeps its SQLSTATE."""
    sqlstate = getattr(exc, "sqlstate", None)
    state = f" (SQLSTATE {sqlstate})" if isinstance(sqlstate, str) and sqlstate else ""
    return f"{type(exc).__name__}{state}: detail withheld (may quote content); see DEBUG log"


def _close_run(settings: Settings, report: RunReport, worklist: Worklist) -> None:
    if not report.drift and not report.errors:
        start = worklist.drift_streak_start()
        if start is not None:
            report.converge_seconds = (report.finished_at or datetime.now(UTC)).timestamp() \
                - start.timestamp()
    worklist.record_run(report)
    write_report(settings, report)
    Metrics().record(report)


def report_dir(settings: Settings) -> Path:
    return settings.reconcile.report_dir or settings.state_dir / "reconcile" / "reports"


def write_report(settings: Settings, report: RunReport) -> Path:
    folder = report_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{report.run_id}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2))
    tmp.replace(path)  # a reader never sees half a report
    return path


def schedule(settings: Settings, every_s: float, checks: Sequence[str] = CHECKS,
             max_runs: int | None = None, **kwargs: Any) -> int:
    """Run every ``every_s`` seconds until SIGTERM/SIGINT (or ``max_runs``)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    runs = 0
    while not stop.is_set() and (max_runs is None or runs < max_runs):
        started = time.monotonic()
        report = run_once(settings, checks, **kwargs)
        print(report.summary(), flush=True)
        runs += 1
        stop.wait(max(0.0, every_s - (time.monotonic() - started)))
    return runs
