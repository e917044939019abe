"""What a handler sees and what it may return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Headers = list[tuple[str, bytes]]


class Record:
    """One consumed Kafka record, its decoded value, and the effects its handler returned.

    Kafka metadata is read from the underlying message only when asked for: building eight
    attributes per record up front costs more than most handlers spend on the record.
    """

    __slots__ = ("_msg", "effects", "value")

    def __init__(self, msg: Any, value: Any = None) -> None:
        # ``effects`` is set by the runtime after the handler ran (not here: hot path).
        self._msg = msg
        self.value = value

    @classmethod
    def detached(
        cls,
        topic: str,
        partition: int,
        offset: int,
        raw: bytes | None,
        key: bytes | None = None,
        headers: Headers | None = None,
        timestamp_ms: int = 0,
    ) -> Record:
        """A record not read from Kafka (tools, tests, replays from a file)."""
        msg = _Detached(topic, partition, offset, key, raw, headers or [], timestamp_ms)
        record = cls(msg, raw)
        record.effects = ()
        return record

    @property
    def topic(self) -> str:
        return self._msg.topic()

    @property
    def partition(self) -> int:
        return self._msg.partition()

    @property
    def offset(self) -> int:
        return self._msg.offset()

    @property
    def key(self) -> bytes | None:
        return self._msg.key()

    @property
    def raw(self) -> bytes | None:
        return self._msg.value()

    @property
    def headers(self) -> Headers:
        return self._msg.headers() or []

    @property
    def timestamp_ms(self) -> int:
        return self._msg.timestamp()[1]

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name and v is not None:
                return v.decode("utf-8", "replace")
        return None


@dataclass(frozen=True, slots=True)
class _Detached:
    """Quacks like confluent_kafka.Message for the accessors Record uses."""

    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None
    _headers: Headers
    _timestamp_ms: int

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> Headers:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp_ms)


@dataclass(frozen=True, slots=True)
class Publish:
    """Effect: produce a record. The runtime publishes it and waits for the broker before
    committing the offset of the record that caused it."""

    topic: str
    value: bytes | None
    key: bytes | str | None = None
    headers: Headers = field(default_factory=list)


