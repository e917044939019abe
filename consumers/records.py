"""What a handler sees and what it may return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed Kafka record with its decoded value."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    raw: bytes | None
    headers: Headers
    timestamp_ms: int
    value: Any = None

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name and v is not None:
                return v.decode("utf-8", "replace")
        return None


@dataclass(frozen=True, slots=True)
class Publish:
    """Effect: produce a record. The runtime publishes it and waits for the broker before
    committing the offset of the record that caused it."""

    topic: str
    value: bytes | None
    key: bytes | str | None = None
    headers: Headers = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of handling one record: its effects, ready for the sink."""

    record: Record
    effects: tuple[Any, ...]
