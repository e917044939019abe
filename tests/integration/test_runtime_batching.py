"""Batch gathering: a lone record is handled at once unless the operator asks to linger."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from fhirbus.consumers.records import Publish, Record
from fhirbus.consumers.runtime import ConsumerRuntime, ConsumerSpec
from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.kafka.config import producer_config
from fhirbus.kafka.producer import Producer
from fhirbus.settings import Settings, load_settings


class _TimedConsumer:
    """The runtime's consumer, with the time each consume() call took written down."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.gathers: list[float] = []

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        started = time.monotonic()
        try:
            return self._inner.consume(num_messages, timeout)
        finally:
            self.gathers.append(time.monotonic() - started)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _gather_times(settings: Settings, stack: EmbeddedStack, topic: str) -> list[float]:
    stack.create_topic(topic, 1)
    producer = Producer(producer_config(settings))
    for i in range(3):
        producer.send(topic, orjson.dumps({"id": i}), key=b"k")
    assert producer.flush(30) == 0
    producer.close()

    def handler(record: Record) -> list[Publish]:
        return []

    spec = ConsumerSpec(stage="test", group_id=f"g-{topic}", topics=[topic], handler=handler,
                        dead_letter_topic=f"{topic}-dlq")
    runtime = ConsumerRuntime(spec, settings)
    timed = _TimedConsumer(runtime.consumer)
    runtime.consumer = timed  # type: ignore[assignment]
    assert runtime.run(max_records=3, idle_exit_s=20) == 3
    return timed.gathers


def test_a_lone_record_does_not_wait_for_company(
        embedded_stack: EmbeddedStack, settings: Settings, unique: str) -> None:
    # The records were all written before the runtime started, so it may find them
    # together; either way, gathering never waits.
    assert settings.runtime.batch_linger_s == 0
    gathers = _gather_times(settings, embedded_stack, f"linger0-{unique}")
    assert gathers and max(gathers) < 0.2


def test_an_operator_linger_is_honoured(embedded_stack: EmbeddedStack, unique: str,
                                        monkeypatch: pytest.MonkeyPatch,
                                        settings: Settings) -> None:
    monkeypatch.setenv("FHIRBUS_RUNTIME__BATCH_LINGER_S", "0.4")
    lingering = load_settings()
    gathers = _gather_times(lingering, embedded_stack, f"linger4-{unique}")
    # One batch holds all three (they were written before it started) and waited for more.
    assert gathers and min(gathers) >= 0.39
