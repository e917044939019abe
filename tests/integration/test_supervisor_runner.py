"""The supervisor loop on real child processes, without a broker: a child that exits is
restarted after its backoff, its log gets one header per start, the state file follows, and
a stop ends in ``stopped`` with no child left."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from fhirbus.supervisor import state
from fhirbus.supervisor.model import ProcessSpec
from fhirbus.supervisor.runner import Supervisor


def _supervisor(tmp_path: Path, lines: list[str]) -> Supervisor:
    spec = ProcessSpec("catalog", "canonicalizer", ("topics", "list"))  # exits at once
    return Supervisor(tmp_path, [spec], backoff_initial_s=0.4, backoff_max_s=0.8,
                      stop_timeout_s=5.0, extra={}, echo=lines.append)


def _tick_until(sup: Supervisor, cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, sup.states
        sup.tick(time.time())
        time.sleep(0.05)


def test_an_exited_child_is_restarted_after_backoff_and_logged(tmp_path: Path) -> None:
    lines: list[str] = []
    sup = _supervisor(tmp_path, lines)
    sup.logs.mkdir(parents=True)
    child = sup.children["catalog"]
    sup._spawn(child)
    assert state.read(tmp_path)["processes"]["catalog"]["status"] == "starting"
    _tick_until(sup, lambda: sup.states["catalog"].status == "restarting")
    st = sup.states["catalog"]
    assert (st.restarts, st.last_exit_code, st.pid) == (1, 0, None)
    assert st.next_start_at is not None and st.next_start_at > time.time() - 0.05
    on_disk = state.read(tmp_path)["processes"]["catalog"]
    assert on_disk["status"] == "restarting" and on_disk["restarts"] == 1
    _tick_until(sup, lambda: sup.states["catalog"].restarts == 2)
    assert any("restarting catalog" in line for line in lines)
    assert sup.stop() == 0
    log = (tmp_path / "logs" / "catalog.log").read_text()
    assert log.count("=== fhirbus up: starting catalog") >= 2
    assert "hl7.raw.v1" in log  # the child's own output lands in its log
    data = state.read(tmp_path)
    assert data["state"] == "stopped"
    assert data["processes"]["catalog"]["status"] == "stopped"
    assert state.running(tmp_path) is None
