"""``<state_dir>/supervisor.json``: what ``fhirbus up`` runs, written atomically on every
change, so ``fhirbus status`` and ``fhirbus demo`` (other processes) can read it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

STATE_FILE = "supervisor.json"


def state_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def logs_dir(state_dir: Path) -> Path:
    return state_dir / "logs"


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    """A killed child its parent has not reaped yet still answers kill(0): ask /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def write(state_dir: Path, data: dict[str, Any]) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_path(state_dir)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)


def read(state_dir: Path) -> dict[str, Any] | None:
    try:
        return orjson.loads(state_path(state_dir).read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None


@dataclass(frozen=True)
class Running:
    """A supervisor found through the state file, if its process is still alive."""

    pid: int
    data: dict[str, Any]

    @property
    def mllp(self) -> tuple[str, int] | None:
        addr = self.data.get("mllp")
        if not addr:
            return None
        host, _, port = str(addr).rpartition(":")
        return host, int(port)


def running(state_dir: Path) -> Running | None:
    data = read(state_dir)
    if not data or data.get("state") == "stopped" or not pid_alive(data.get("pid")):
        return None
    return Running(int(data["pid"]), data)
