"""What a reconciliation run finds and does: drift records, their risk, the run report.

Pure values only; the checks that produce them and the repairs that act on them sit in
the other modules of this package.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from fhirbus.projections.core import REPAIR_CAUSATION_PREFIX

DriftClass = Literal["missing", "extra", "stale_version", "field_mismatch"]
DRIFT_CLASSES: tuple[DriftClass, ...] = ("missing", "extra", "stale_version", "field_mismatch")
Risk = Literal["low", "high"]
# What a run did about one drift record.
Action = Literal["replayed", "reprocessed", "worklisted", "none"]


def new_run_id(now: datetime | None = None) -> str:
    """Run ids are the causation id of every event a run emits; the projections treat an
    event caused by a run (this prefix) as a repair that may restate a version."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{REPAIR_CAUSATION_PREFIX}{stamp}-{secrets.token_hex(4)}"


def risk_for(risk_map: Mapping[str, str], resource_type: str) -> Risk:
    value = risk_map.get(resource_type, risk_map.get("default", "low"))
    return "high" if value == "high" else "low"


@dataclass
class Drift:
    """One difference between what a source says and what a target holds."""

    check: str  # "cdc:labbilling.patients->ehr.patients", "canonical:ehr", "raw-hl7"
    drift_class: DriftClass
    resource_type: str
    resource_id: str
    expected_version: int | None = None
    actual_version: int | None = None
    expected_hash: str | None = None
    actual_hash: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    risk: Risk = "low"
    action: Action = "none"
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckResult:
    name: str
    compared: int = 0  # keys (rows, resources, records) looked at
    drift: list[Drift] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunReport:
    run_id: str
    started_at: datetime
    finished_at: datetime | None = None
    checks: list[CheckResult] = field(default_factory=list)
    converge_seconds: float | None = None  # set when this run ends a streak of drift
    errors: list[str] = field(default_factory=list)

    @property
    def drift(self) -> list[Drift]:
        return [d for c in self.checks for d in c.drift]

    def counts(self) -> dict[str, dict[str, int]]:
        drift = self.drift
        return {
            "by_class": dict(Counter(d.drift_class for d in drift)),
            "by_risk": dict(Counter(d.risk for d in drift)),
            "by_action": dict(Counter(d.action for d in drift)),
            "by_check": dict(Counter(d.check for d in drift)),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "duration_s": self.duration_s,
            "total_drift": len(self.drift),
            **self.counts(),
            "converge_seconds": self.converge_seconds,
            "errors": self.errors,
            "checks": [
                {"name": c.name, "compared": c.compared, "drift": len(c.drift),
                 "seconds": round(c.seconds, 3), "notes": c.notes, "stats": c.stats}
                for c in self.checks
            ],
            "drift": [d.to_json() for d in self.drift],
        }

    @property
    def duration_s(self) -> float:
        end = self.finished_at or datetime.now(UTC)
        return round((end - self.started_at).total_seconds(), 3)

    def summary(self) -> str:
        """A readable summary with counts only: no identifiers, no values."""
        counts = self.counts()
        lines = [f"reconcile run {self.run_id}: {len(self.drift)} drift record(s) in "
                 f"{self.duration_s:.1f}s"]
        for c in self.checks:
            lines.append(f"  {c.name}: compared {c.compared}, drift {len(c.drift)} "
                         f"({c.seconds:.2f}s)")
            lines.extend(f"    note: {n}" for n in c.notes)
        for title, key in (("by class", "by_class"), ("by risk", "by_risk"),
                           ("actions", "by_action")):
            if counts[key]:
                body = ", ".join(f"{k}={v}" for k, v in sorted(counts[key].items()))
                lines.append(f"  {title}: {body}")
        if self.converge_seconds is not None:
            lines.append(f"  converged: {self.converge_seconds:.1f}s after drift was first seen")
        lines.extend(f"  ERROR: {e}" for e in self.errors)
        return "\n".join(lines)
