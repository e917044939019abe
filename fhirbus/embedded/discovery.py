"""Where a running embedded stack tells other fhirbus processes on the machine its addresses."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

STATE_FILE = "embedded.json"


@dataclass(frozen=True)
class EmbeddedStack:
    bootstrap: str
    registry_url: str | None
    pid: int
    started_at: str

    def is_alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def state_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def publish(state_dir: Path, stack: EmbeddedStack) -> Path:
    """Write atomically, so a reader never sees half a file."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_path(state_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(asdict(stack), option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)
    return path


def read(state_dir: Path) -> EmbeddedStack | None:
    """The running stack, or None when none is published or its process is gone."""
    try:
        data = orjson.loads(state_path(state_dir).read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None
    stack = EmbeddedStack(**data)
    return stack if stack.is_alive() else None


def withdraw(state_dir: Path, pid: int) -> None:
    path = state_path(state_dir)
    try:
        if orjson.loads(path.read_bytes()).get("pid") == pid:
            path.unlink()
    except (FileNotFoundError, orjson.JSONDecodeError):
        pass
