"""The consumer runtime on the embedded broker: retries, dead letters, broker outage."""

from __future__ import annotations

import threading
import time
from collections import Counter

import orjson
import pytest

from fhirbus.consumers.errors import TransientError
from fhirbus.consumers.records import Publish, Record
from fhirbus.consumers.runtime import ConsumerRuntime, ConsumerSpec
from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.kafka.config import producer_config
from fhirbus.kafka.producer import Producer
from fhirbus.settings import Settings, load_settings
from tests.kafka_helpers import headers_of, read_all

N = 10_000


@pytest.fixture
def fast_retry_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("FHIRBUS_RUNTIME__BACKOFF_INITIAL_MS", "2")
    monkeypatch.setenv("FHIRBUS_RUNTIME__BACKOFF_MAX_MS", "20")
    monkeypatch.setenv("FHIRBUS_RUNTIME__MAX_ATTEMPTS", "5")
    return load_settings()


def _produce(settings: Settings, topic: str, ids: range) -> None:
    producer = Producer(producer_config(settings))
    for i in ids:
        producer.send(topic, orjson.dumps({"id": i}), key=str(i % 97))
    assert producer.flush(60) == 0


def _is_transient(i: int) -> bool:
    return i % 100 == 7  # 1%


def _is_permanent(i: int) -> bool:
    return i % 200 == 3  # 0.5%


@pytest.mark.slow
def test_retries_and_dead_letters_exactly_the_permanent_failures(
    embedded_stack: EmbeddedStack, fast_retry_settings: Settings, unique: str
) -> None:
    src, out, dlq = f"rt-in-{unique}", f"rt-out-{unique}", f"rt-dlq-{unique}"
    embedded_stack.create_topic(src, 4)
    _produce(fast_retry_settings, src, range(N))
    attempts: Counter[int] = Counter()

    def handler(record: Record) -> list[Publish]:
        i = record.value["id"]
        attempts[i] += 1
        if _is_permanent(i):
            raise ValueError("unmappable content")
        if _is_transient(i) and attempts[i] <= 2:
            raise TransientError("lock timeout")
        return [Publish(out, record.raw, record.key)]

    spec = ConsumerSpec(
        stage="test", group_id=f"g-{unique}", topics=[src], handler=handler,
        decode=lambda raw, _t: orjson.loads(raw), dead_letter_topic=dlq,
    )
    runtime = ConsumerRuntime(spec, fast_retry_settings)
    runtime.run(max_records=N, idle_exit_s=20)

    permanent = {i for i in range(N) if _is_permanent(i)}
    outputs = Counter(orjson.loads(m.value())["id"] for m in read_all(
        embedded_stack.bootstrap, out, N - len(permanent)))
    assert set(outputs) == set(range(N)) - permanent
    assert max(outputs.values()) == 1, "an effect happened twice"
    dead = read_all(embedded_stack.bootstrap, dlq, len(permanent))
    assert {orjson.loads(m.value())["id"] for m in dead} == permanent
    assert len(dead) == len(permanent)
    for msg in dead:
        h = headers_of(msg)
        i = orjson.loads(msg.value())["id"]
        assert msg.value() == orjson.dumps({"id": i})  # original bytes, untouched
        assert h["dlq.error_class"] == "permanent"
        assert h["dlq.error_type"] == "ValueError"
        assert h["dlq.original_topic"] == src
        assert h["dlq.attempts"] == "1"
        assert h["dlq.stage"] == "test"
        assert int(h["dlq.original_offset"]) >= 0 and "dlq.first_failed_at" in h
        assert "dlq.trace_id" in h and "traceparent" in h
    assert all(attempts[i] == 3 for i in range(N) if _is_transient(i) and not _is_permanent(i))
    assert runtime.metrics.counts["dead_lettered"] == len(permanent)


@pytest.mark.slow
def test_broker_outage_mid_stream_loses_nothing(
    embedded_stack: EmbeddedStack, fast_retry_settings: Settings, unique: str
) -> None:
    src, out = f"bo-in-{unique}", f"bo-out-{unique}"
    embedded_stack.create_topic(src, 4, replication=3)
    embedded_stack.create_topic(out, 4, replication=3)
    total = 3_000
    spec = ConsumerSpec(
        stage="test", group_id=f"g-{unique}", topics=[src],
        handler=lambda r: [Publish(out, r.raw, r.key)], dead_letter_topic=f"bo-dlq-{unique}",
    )
    runtime = ConsumerRuntime(spec, fast_retry_settings)
    consumer_thread = threading.Thread(target=runtime.run, kwargs={"idle_exit_s": 25})
    consumer_thread.start()

    def outage() -> None:
        time.sleep(1.0)
        embedded_stack.broker_down()  # every broker: the whole cluster disappears
        time.sleep(3.0)
        embedded_stack.broker_up()

    chaos = threading.Thread(target=outage)
    chaos.start()
    producer = Producer(producer_config(fast_retry_settings))
    for i in range(total):
        producer.send(src, orjson.dumps({"id": i}), key=str(i % 13))
        if i % 100 == 0:
            time.sleep(0.05)  # spread production across the outage
    chaos.join()
    assert producer.flush(60) == 0
    got = read_all(embedded_stack.bootstrap, out, total, timeout_s=60)
    runtime.stop()
    consumer_thread.join(30)
    ids = [orjson.loads(m.value())["id"] for m in got]
    assert set(ids) == set(range(total))


def test_a_run_moves_the_startup_heap_out_of_the_collector(
    embedded_stack: EmbeddedStack, settings: Settings, unique: str
) -> None:
    """Full collections, which a batch's Records trigger, must not walk the process's
    startup objects again and again (see runtime._freeze_startup_heap)."""
    import gc

    src = f"heap-{unique}"
    embedded_stack.create_topic(src, 1)
    _produce(settings, src, range(3))
    spec = ConsumerSpec(stage="test", group_id=f"g-{unique}", topics=[src],
                        handler=lambda r: None, dead_letter_topic=f"heap-dlq-{unique}")
    assert ConsumerRuntime(spec, settings).run(max_records=3, idle_exit_s=15) == 3
    assert gc.get_freeze_count() > 0
    assert gc.isenabled()
