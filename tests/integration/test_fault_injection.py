"""The embedded stack's fault injection, and what the producer does under it."""

from __future__ import annotations

import orjson

from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.embedded.mock_cluster import ApiKey
from fhirbus.kafka.config import producer_config
from fhirbus.kafka.producer import DeliveryError, Producer
from fhirbus.settings import Settings
from tests.kafka_helpers import read_all

NOT_LEADER_OR_FOLLOWER = 6
REQUEST_TIMED_OUT = 7
MESSAGE_TOO_LARGE = 10


def test_retriable_produce_errors_are_retried_without_duplicates(
    embedded_stack: EmbeddedStack, settings: Settings, unique: str
) -> None:
    topic = f"fi-{unique}"
    embedded_stack.create_topic(topic, 1)
    embedded_stack.push_request_errors(
        ApiKey.PRODUCE, [NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT, NOT_LEADER_OR_FOLLOWER]
    )
    producer = Producer(producer_config(settings, **{"linger.ms": 0}))
    futures = [producer.send(topic, orjson.dumps({"id": i}), key="k") for i in range(50)]
    assert producer.flush(60) == 0
    assert all(f.exception(0) is None for f in futures)
    producer.close()
    ids = [orjson.loads(m.value())["id"] for m in read_all(embedded_stack.bootstrap, topic, 50)]
    assert ids == list(range(50)), "idempotence keeps order and drops retried duplicates"


def test_a_permanent_produce_error_fails_the_future(
    embedded_stack: EmbeddedStack, settings: Settings, unique: str
) -> None:
    topic = f"fi-perm-{unique}"
    embedded_stack.create_topic(topic, 1)
    embedded_stack.push_request_errors(ApiKey.PRODUCE, [MESSAGE_TOO_LARGE])
    producer = Producer(producer_config(settings, **{"linger.ms": 0}))
    future = producer.send(topic, b"x", key="k")
    producer.flush(30)
    error = future.exception(5)
    producer.close()
    assert isinstance(error, DeliveryError) and not error.retriable
