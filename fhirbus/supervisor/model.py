"""Supervision as plain data and functions: what a supervised process is, which states it
moves through, and when a crashed one may start again. No processes or clocks in here; the
runner passes ``now`` in, so every transition is testable without waiting."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Literal

from fhirbus.consumers.backoff import backoff_ms

Status = Literal["starting", "up", "restarting", "stopping", "stopped", "failed"]
Ready = Literal["started", "broker", "listening"]

# A process that ran this long before it died is a fresh failure, not another crash in a
# loop: its backoff starts again from the initial delay.
STABLE_AFTER_S = 30.0

# Stop order, first to last. The listener goes first so it stops accepting and drains (what
# Kafka has not confirmed stays in its spool); producers of Kafka records stop before their
# consumers; the broker goes last because everything else talks to it.
STOP_TIERS = ("listener", "cdc", "canonicalizer", "projection", "reconciler", "broker")


@dataclass(frozen=True)
class ProcessSpec:
    """One supervised process: ``argv`` after ``fhirbus``; ``kind`` places it in STOP_TIERS."""

    name: str
    kind: str
    argv: tuple[str, ...]
    ready: Ready = "started"
    env: tuple[tuple[str, str], ...] = ()
    group: str | None = None  # its consumer group, for status

    def __post_init__(self) -> None:
        if self.kind not in STOP_TIERS:
            raise ValueError(f"unknown process kind {self.kind!r}")


@dataclass(frozen=True)
class ProcState:
    name: str
    status: Status = "stopped"
    pid: int | None = None
    restarts: int = 0
    failures: int = 0  # consecutive crashes, for the backoff
    last_exit_code: int | None = None
    started_at: float | None = None
    next_start_at: float | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "status": self.status, "pid": self.pid, "restarts": self.restarts,
            "last_exit_code": self.last_exit_code, "started_at": self.started_at,
            "next_start_at": self.next_start_at,
        }


def restart_delay_s(failures: int, initial_s: float, max_s: float,
                    rng: random.Random | None = None) -> float:
    """Capped exponential backoff with jitter, for the ``failures``-th consecutive crash."""
    return backoff_ms(max(1, failures), int(initial_s * 1000), int(max_s * 1000), rng) / 1000


def started(state: ProcState, pid: int, now: float) -> ProcState:
    return replace(state, status="starting", pid=pid, started_at=now, next_start_at=None)


def became_ready(state: ProcState) -> ProcState:
    return replace(state, status="up") if state.status == "starting" else state


def exited(state: ProcState, code: int, now: float, initial_s: float, max_s: float,
           rng: random.Random | None = None) -> ProcState:
    """A process ended without being asked to: schedule its restart after a backoff."""
    ran = now - state.started_at if state.started_at is not None else 0.0
    failures = 1 if ran >= STABLE_AFTER_S else state.failures + 1
    delay = restart_delay_s(failures, initial_s, max_s, rng)
    return replace(state, status="restarting", pid=None, last_exit_code=code,
                   failures=failures, restarts=state.restarts + 1, next_start_at=now + delay)


def stopped(state: ProcState, code: int | None) -> ProcState:
    return replace(state, status="stopped", pid=None, last_exit_code=code, next_start_at=None)


def stopping(state: ProcState) -> ProcState:
    return replace(state, status="stopping")


def held(state: ProcState, start_at: float) -> ProcState:
    """Stopped because a process it depends on (the broker) went away; starts again at
    ``start_at``. It counts as a restart, not as a crash of its own."""
    return replace(state, status="restarting", pid=None, restarts=state.restarts + 1,
                   next_start_at=start_at)


def due(state: ProcState, now: float) -> bool:
    """Is a restarting process's backoff over?"""
    return (state.status == "restarting" and state.next_start_at is not None
            and now >= state.next_start_at)


def stop_order(specs: list[ProcessSpec]) -> list[list[ProcessSpec]]:
    """Processes grouped into tiers, in the order they are stopped (a tier stops together)."""
    tiers = [[s for s in specs if s.kind == kind] for kind in STOP_TIERS]
    return [tier for tier in tiers if tier]


def start_order(specs: list[ProcessSpec]) -> list[ProcessSpec]:
    """Broker first (everything needs it), the listener last: once it listens, the whole
    pipeline behind it is running and ``up`` can say it is ready."""
    rank = {"broker": 0, "canonicalizer": 1, "projection": 2, "reconciler": 3, "cdc": 4,
            "listener": 5}
    return sorted(specs, key=lambda s: rank[s.kind])
