"""Supervision logic as plain functions: backoff, state transitions, start and stop order."""

from __future__ import annotations

import random

import pytest

from fhirbus.supervisor import model
from fhirbus.supervisor.model import ProcessSpec, ProcState


def _spec(name: str, kind: str) -> ProcessSpec:
    return ProcessSpec(name, kind, (kind,))


SPECS = [_spec("projection-ehr", "projection"), _spec("broker", "broker"),
         _spec("reconciler", "reconciler"), _spec("hl7-listener", "listener"),
         _spec("cdc-lab", "cdc"), _spec("canonicalizer", "canonicalizer"),
         _spec("projection-billing", "projection")]


def test_restart_delay_grows_exponentially_and_is_capped() -> None:
    rng = random.Random(7)
    for failures in range(1, 12):
        ceiling = min(30.0, 1.0 * 2 ** (failures - 1))
        for _ in range(50):
            delay = model.restart_delay_s(failures, 1.0, 30.0, rng)
            assert 0.5 <= delay <= ceiling + 1e-9


def test_restart_delay_is_jittered() -> None:
    rng = random.Random(1)
    assert len({model.restart_delay_s(4, 1.0, 30.0, rng) for _ in range(20)}) > 5


def test_crash_loop_backs_off_further_each_time() -> None:
    rng = random.Random(3)
    st = model.started(ProcState("canonicalizer"), pid=10, now=100.0)
    st = model.became_ready(st)
    assert st.status == "up"
    st = model.exited(st, -9, now=101.0, initial_s=1.0, max_s=60.0, rng=rng)
    assert (st.status, st.pid, st.restarts, st.failures, st.last_exit_code) == (
        "restarting", None, 1, 1, -9)
    assert not model.due(st, 101.0)
    assert model.due(st, 101.0 + 1.0)
    for n in range(2, 6):  # crashes right after each start: the ceiling doubles
        st = model.started(st, pid=10 + n, now=200.0 * n)
        st = model.exited(st, 1, now=200.0 * n + 0.1, initial_s=1.0, max_s=60.0, rng=rng)
        assert st.failures == n and st.restarts == n
        assert (st.next_start_at or 0) - (200.0 * n + 0.1) <= 2 ** (n - 1)


def test_a_process_that_ran_stably_starts_its_backoff_again() -> None:
    st = ProcState("x", "up", pid=5, restarts=3, failures=4, started_at=0.0)
    st = model.exited(st, 1, now=model.STABLE_AFTER_S + 1, initial_s=1.0, max_s=60.0)
    assert st.failures == 1 and st.restarts == 4
    assert (st.next_start_at or 0) - (model.STABLE_AFTER_S + 1) <= 1.0


def test_stopped_and_held() -> None:
    st = model.stopped(ProcState("x", "stopping", pid=5), 0)
    assert (st.status, st.pid, st.last_exit_code) == ("stopped", None, 0)
    held = model.held(ProcState("x", "up", pid=5, restarts=2), start_at=50.0)
    assert (held.status, held.pid, held.restarts) == ("restarting", None, 3)
    assert model.due(held, 50.0) and not model.due(held, 49.9)
    assert not model.due(ProcState("x", "up", pid=1, next_start_at=0.0), 10.0)


def test_start_order_broker_first_listener_last() -> None:
    names = [s.name for s in model.start_order(SPECS)]
    assert names[0] == "broker" and names[-1] == "hl7-listener"
    assert names.index("canonicalizer") < names.index("projection-ehr")


def test_stop_order_listener_first_then_producers_before_consumers_broker_last() -> None:
    tiers = [[s.name for s in tier] for tier in model.stop_order(SPECS)]
    assert tiers == [["hl7-listener"], ["cdc-lab"], ["canonicalizer"],
                     ["projection-ehr", "projection-billing"], ["reconciler"], ["broker"]]


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown process kind"):
        ProcessSpec("x", "daemon", ())


def test_state_json_holds_what_status_reads() -> None:
    st = ProcState("x", "up", pid=9, restarts=1, last_exit_code=-9, started_at=1.0)
    assert st.to_json()["restarts"] == 1 and st.to_json()["pid"] == 9
