"""FHIR element paths (``code.coding[0].system``), parsed once at load, set per row."""

from __future__ import annotations

from typing import Any

Path = tuple[str | int, ...]


def parse(path: str) -> Path:
    parts: list[str | int] = []
    for step in path.split("."):
        name, _, index = step.partition("[")
        parts.append(name)
        if index:
            parts.append(int(index.rstrip("]")))
    return tuple(parts)


def put(body: dict[str, Any], path: Path, value: Any) -> None:
    """Set ``value`` at ``path``, creating objects and lists on the way (list gaps are
    filled with None and removed by ``prune``)."""
    node: Any = body
    last = len(path) - 1
    for i, step in enumerate(path):
        if i == last:
            break
        blank: Any = [] if isinstance(path[i + 1], int) else {}
        if isinstance(step, int):
            while len(node) <= step:
                node.append(None)
            if node[step] is None:
                node[step] = blank
            node = node[step]
        else:
            child = node.get(step)
            if child is None:
                child = node[step] = blank
            node = child
    step = path[last]
    if isinstance(step, int):
        while len(node) <= step:
            node.append(None)
    node[step] = value


def prune(value: Any) -> Any:
    """Drop None, empty objects and empty lists (FHIR forbids empty elements)."""
    if isinstance(value, dict):
        out = {k: p for k, v in value.items() if (p := prune(v)) is not None}
        return out or None
    if isinstance(value, list):
        items = [p for v in value if (p := prune(v)) is not None]
        return items or None
    return value
