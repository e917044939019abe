"""The topic catalog and the runtime's error classes and backoff."""

from __future__ import annotations

import random
import sqlite3

from hypothesis import given
from hypothesis import strategies as st

from fhirbus.consumers.backoff import backoff_ms
from fhirbus.consumers.errors import (
    DownstreamUnavailable,
    ErrorClass,
    PermanentError,
    TransientError,
    classify,
)
from fhirbus.schemas.topics import CANONICAL_RESOURCES, CATALOG, by_name, canonical_topic


def test_catalog_names_are_unique_and_versioned() -> None:
    names = [t.name for t in CATALOG]
    assert len(names) == len(set(names))
    for resource in CANONICAL_RESOURCES:
        spec = by_name()[canonical_topic(resource)]
        assert spec.name.endswith(".v1") and spec.value_format.startswith("avro:")
        assert spec.classification == "phi"


def test_topic_configs_are_strings() -> None:
    for spec in CATALOG:
        assert all(isinstance(v, str) for v in spec.kafka_config().values())


def test_classification() -> None:
    assert classify(TransientError()) is ErrorClass.TRANSIENT
    assert classify(TimeoutError()) is ErrorClass.TRANSIENT
    assert classify(sqlite3.OperationalError("database is locked")) is ErrorClass.TRANSIENT
    assert classify(DownstreamUnavailable()) is ErrorClass.OUTAGE
    assert classify(ConnectionRefusedError()) is ErrorClass.OUTAGE
    assert classify(PermanentError()) is ErrorClass.PERMANENT
    assert classify(KeyError("bug")) is ErrorClass.PERMANENT


@given(st.integers(1, 60), st.integers(1, 1_000), st.integers(1, 100_000), st.integers(0, 2**32))
def test_backoff_is_capped_and_grows(attempt: int, initial: int, cap: int, seed: int) -> None:
    delay = backoff_ms(attempt, initial, cap, random.Random(seed))
    assert 0 <= delay <= max(cap, initial // 2)
    assert delay <= initial * 2 ** (attempt - 1) or delay <= initial // 2
