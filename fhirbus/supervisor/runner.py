"""The supervisor loop: child processes, their logs, readiness, restarts and an ordered stop.

Children run in their own session, so a Ctrl-C in the terminal reaches only the supervisor,
which then stops them in order (listener first, broker last). Each child also gets SIGTERM
if the supervisor itself dies (Linux parent-death signal), so no orphan keeps a port.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from fhirbus.embedded import discovery

from . import model, state
from .model import ProcessSpec, ProcState

TICK_S = 0.2
READY_TIMEOUT_S = 60.0
_LISTENING = re.compile(rb"listening on (\S+):(\d+)")
Echo = Callable[[str], None]


class StartupError(Exception):
    """A process did not come up; the message says which, why and where its log is."""


@dataclass
class Child:
    spec: ProcessSpec
    proc: subprocess.Popen[bytes] | None = None
    log_offset: int = 0


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts else None


def log_tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


class Supervisor:
    def __init__(self, state_dir: Path, specs: list[ProcessSpec], *, backoff_initial_s: float,
                 backoff_max_s: float, stop_timeout_s: float, extra: dict[str, Any],
                 echo: Echo = print, after_broker: Callable[[], None] | None = None) -> None:
        self.state_dir = state_dir
        self.logs = state.logs_dir(state_dir)
        self.children = {s.name: Child(s) for s in model.start_order(specs)}
        self.states = {s.name: ProcState(s.name) for s in specs}
        self.backoff = (backoff_initial_s, backoff_max_s)
        self.stop_timeout_s = stop_timeout_s
        self.extra = extra  # cdc/reconciler notes, for the state file
        self.echo = echo
        self.after_broker = after_broker  # e.g. create topics consumers subscribe to
        self.phase = "starting"
        self.mllp: str | None = None
        self.started_at = time.time()
        self._stop = False

    # -- lifecycle -------------------------------------------------------------------------
    def run(self) -> int:
        self._install_signals()
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            self._start_all()
        except StartupError as exc:
            self.echo(f"fhirbus up: {exc}")
            self.stop()
            return 1
        if self._stop:
            self.stop()
            return 0
        self.phase = "running"
        self._save()
        self.echo(f"fhirbus up: ready; MLLP listener on {self.mllp}; {len(self.children)} "
                  f"processes; logs in {self.logs}; `fhirbus status` to watch; Ctrl-C stops")
        while not self._stop:
            self.tick(time.time())
            time.sleep(TICK_S)
        return self.stop()

    def _install_signals(self) -> None:
        def request_stop(signum: int, _frame: FrameType | None) -> None:
            self._stop = True

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    def _start_all(self) -> None:
        for name, child in self.children.items():
            if self._stop:
                return
            began = time.time()
            self.echo(f"  starting {name:22} ...")
            self._spawn(child)
            self._await_ready(child)
            self.echo(f"  {name:31} up ({time.time() - began:.1f} s, pid {child.proc.pid})"
                      if child.proc else f"  {name} up")

    # -- one child -------------------------------------------------------------------------
    def _spawn(self, child: Child) -> None:
        spec = child.spec
        path = self.logs / f"{spec.name}.log"
        st = self.states[spec.name]
        with path.open("ab") as log:
            log.write(f"=== fhirbus up: starting {spec.name} (restart {st.restarts}) at "
                      f"{iso(time.time())}: fhirbus {' '.join(spec.argv)}\n".encode())
            child.log_offset = log.tell()
            env = {**os.environ, "FHIRBUS_STATE_DIR": str(self.state_dir), **dict(spec.env)}
            child.proc = subprocess.Popen(
                [sys.executable, "-m", "fhirbus.cli", *spec.argv], stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True, preexec_fn=_die_with_parent,
            )
        self.states[spec.name] = model.started(st, child.proc.pid, time.time())
        self._save()

    def _is_ready(self, child: Child) -> bool:
        if child.proc is None:
            return False
        if child.spec.ready == "broker":
            stack = discovery.read(self.state_dir)
            return stack is not None and stack.pid == child.proc.pid
        if child.spec.ready == "listening":
            found = self._scan_log(child, _LISTENING)
            if found:
                self.mllp = f"{found.group(1).decode()}:{found.group(2).decode()}"
            return found is not None
        return True

    def _scan_log(self, child: Child, pattern: re.Pattern[bytes]) -> re.Match[bytes] | None:
        path = self.logs / f"{child.spec.name}.log"
        try:
            with path.open("rb") as f:
                f.seek(child.log_offset)
                return pattern.search(f.read())
        except OSError:
            return None

    def _await_ready(self, child: Child) -> None:
        deadline = time.time() + READY_TIMEOUT_S
        log = self.logs / f"{child.spec.name}.log"
        while not self._stop:
            if self._is_ready(child):
                self._ready(child)
                return
            code = child.proc.poll() if child.proc else None
            if code is not None:
                raise StartupError(f"{child.spec.name} exited with code {code} while starting; "
                                   f"its log ({log}) ends with:\n{log_tail(log)}\n"
                                   "fix the cause above, then run `fhirbus up` again")
            if time.time() > deadline:
                raise StartupError(f"{child.spec.name} was not ready after "
                                   f"{READY_TIMEOUT_S:.0f} s; see {log}")
            time.sleep(0.05)

    def _ready(self, child: Child) -> None:
        self.states[child.spec.name] = model.became_ready(self.states[child.spec.name])
        self._save()
        if child.spec.kind == "broker" and self.after_broker is not None:
            try:
                self.after_broker()
            except Exception as exc:  # not fatal: consumers find topics at their next refresh
                self.echo(f"fhirbus up: could not pre-create topics on the broker ({exc}); "
                          "consumers will find them at their next metadata refresh")

    # -- supervision -----------------------------------------------------------------------
    def tick(self, now: float) -> None:
        for name, child in self.children.items():
            st = self.states[name]
            if child.proc is not None:
                code = child.proc.poll()
                if code is not None:
                    self._on_exit(child, code, now)
                elif st.status == "starting" and self._is_ready(child):
                    self._ready(child)
            elif model.due(st, now) and (child.spec.kind == "broker" or self._broker_up()):
                self.echo(f"fhirbus up: restarting {name} (restart {st.restarts})")
                self._spawn(child)

    def _broker_up(self) -> bool:
        """Everything else needs the broker: it waits while a new broker starts."""
        return all(self.states[n].status == "up" for n, c in self.children.items()
                   if c.spec.kind == "broker")

    def _on_exit(self, child: Child, code: int, now: float) -> None:
        name = child.spec.name
        child.proc = None
        st = model.exited(self.states[name], code, now, *self.backoff)
        self.states[name] = st
        wait = (st.next_start_at or now) - now
        self.echo(f"fhirbus up: {name} exited with code {code}; restarting in {wait:.1f} s "
                  f"(see {self.logs / (name + '.log')})")
        if child.spec.kind == "broker":
            self._broker_lost()
        self._save()

    def _broker_lost(self) -> None:
        """Every other process holds the old broker's address, so they restart with it."""
        self.echo("fhirbus up: the embedded broker keeps topics in memory only: the records it "
                  "held are lost (the listener's spool keeps what it had not confirmed); "
                  "restarting every process against the new broker. The read models keep what they "
                  "had (their positions point into the lost topics; `fhirbus project rebuild` "
                  "or a fresh state dir starts clean). Use a real Kafka cluster "
                  "(FHIRBUS_KAFKA_BOOTSTRAP) where this matters.")
        broker_at = self.states[next(n for n, c in self.children.items()
                                     if c.spec.kind == "broker")].next_start_at or time.time()
        for tier in model.stop_order([c.spec for c in self.children.values()]):
            others = [t for t in tier if t.kind != "broker"]
            self._stop_tier(others)
            for spec in others:  # each starts again once the new broker is up
                self.states[spec.name] = model.held(self.states[spec.name], broker_at)

    # -- stop ------------------------------------------------------------------------------
    def stop(self) -> int:
        """Stop in order, each tier with SIGTERM then, after the timeout, SIGKILL."""
        self.phase = "stopping"
        self._save()
        killed: list[str] = []
        for tier in model.stop_order([c.spec for c in self.children.values()]):
            killed += self._stop_tier(tier)
        self.phase = "stopped"
        self._save()
        if killed:
            self.echo(f"fhirbus up: stopped; {', '.join(killed)} did not stop within "
                      f"{self.stop_timeout_s:.0f} s and were killed (see their logs)")
            return 1
        self.echo("fhirbus up: stopped; every process exited cleanly")
        return 0

    def _stop_tier(self, tier: list[ProcessSpec]) -> list[str]:
        running = [self.children[s.name] for s in tier if self.children[s.name].proc]
        for child in running:
            self.states[child.spec.name] = model.stopping(self.states[child.spec.name])
            self._signal(child, signal.SIGTERM)
        self._save()
        killed = []
        deadline = time.time() + self.stop_timeout_s
        for child in running:
            assert child.proc is not None
            try:
                code: int | None = child.proc.wait(max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                self._signal(child, signal.SIGKILL)
                code = child.proc.wait()
                killed.append(child.spec.name)
            child.proc = None
            self.states[child.spec.name] = model.stopped(self.states[child.spec.name], code)
        for spec in tier:  # waiting for a restart: nothing to stop, but not "restarting"
            if self.states[spec.name].status == "restarting":
                self.states[spec.name] = model.stopped(self.states[spec.name], None)
        self._save()
        return killed

    @staticmethod
    def _signal(child: Child, signum: int) -> None:
        if child.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signum)

    # -- state file ------------------------------------------------------------------------
    def _save(self) -> None:
        processes = {}
        for name, child in self.children.items():
            st = self.states[name]
            processes[name] = {
                **st.to_json(), "started_at": iso(st.started_at),
                "next_start_at": iso(st.next_start_at), "kind": child.spec.kind,
                "group": child.spec.group, "argv": list(child.spec.argv),
                "log": str(self.logs / f"{name}.log"),
            }
        state.write(self.state_dir, {
            "pid": os.getpid(), "state": self.phase, "started_at": iso(self.started_at),
            "updated_at": iso(time.time()), "state_dir": str(self.state_dir),
            "mllp": self.mllp, "processes": processes, **self.extra,
        })

