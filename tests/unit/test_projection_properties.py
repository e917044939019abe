"""Property: for a valid event history (corpus events plus generated later versions), any
delivery that keeps per-key order within a topic, with arbitrary duplicates anywhere and
any batch split, yields the same read model as clean in-order delivery. For every
projection, on SQLite and on PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhirbus.projections import analytics, billing, ehr, testing
from fhirbus.projections.core import Projection
from fhirbus.projections.sink import ProjectionSink, prepare
from fhirbus.schemas.envelope import CanonicalEvent, stable_id
from fhirbus.schemas.topics import canonical_topic
from tests.corpus import HL7_CORPUS

SECOND = 10_000 * 1000  # resource_version units per second of source time
STATUSES = {
    "Observation": ["preliminary", "final", "corrected", "amended", "entered-in-error"],
    "DiagnosticReport": ["preliminary", "final", "corrected", "cancelled"],
    "ServiceRequest": ["active", "completed", "revoked", "on-hold"],
    "Encounter": ["in-progress", "finished", "cancelled"],
    "ChargeItem": ["billable", "billable", "entered-in-error"],
    "Immunization": ["completed", "entered-in-error"],
    "Appointment": ["booked", "cancelled"],
    "DocumentReference": ["current", "entered-in-error"],
}
ORDER_PRICES = {"4241": Decimal("12.50"), "57698-3": Decimal("3.10")}


def _build(name: str) -> Projection:
    if name == "ehr":
        return ehr.build()
    if name == "billing":
        return billing.build(billing.BillingOptions(ORDER_PRICES))
    return analytics.build(analytics.AnalyticsOptions(b"property-secret", "day"))


@pytest.fixture(scope="module")
def corpus() -> list[CanonicalEvent]:
    return testing.corpus_events(HL7_CORPUS)


def correction(event: CanonicalEvent, k: int, choice: int) -> CanonicalEvent:
    """A later version of ``event``'s resource: another status, another value/amount."""
    body = orjson.loads(event.resource)
    options = STATUSES[event.resource_type]
    body["status"] = options[choice % len(options)]
    if "valueQuantity" in body:
        body["valueQuantity"]["value"] = choice
    if event.resource_type == "ChargeItem":
        body["priceOverride"] = {"value": 10 + choice * 7.25, "currency": "USD"}
    if event.resource_type == "Observation":
        body["interpretation"] = [{"coding": [{"code": "HLN"[choice % 3]}]}]
    version = event.resource_version + k * SECOND
    etype = f"{event.resource_type.lower()}.{body['status']}"
    return replace(event, resource=orjson.dumps(body), resource_version=version,
                   event_type=etype, event_id=stable_id("test", event.event_id, k, choice))


@st.composite
def deliveries(draw: st.DrawFn, pool: list[CanonicalEvent]) -> tuple[list, list, int]:
    chosen = sorted(draw(st.sets(st.integers(0, len(pool) - 1), min_size=1)))
    clean: list[CanonicalEvent] = []
    for i in chosen:
        clean.append(pool[i])
        if pool[i].resource_type in STATUSES:
            for k in range(1, draw(st.integers(0, 2)) + 1):
                clean.append(correction(pool[i], k, draw(st.integers(0, 20))))
    queues: dict[tuple[str, str], list[CanonicalEvent]] = {}
    for ev in clean:
        queues.setdefault((canonical_topic(ev.resource_type), ev.key), []).append(ev)
    rnd: random.Random = draw(st.randoms(use_true_random=False))
    live = [list(q) for q in queues.values()]
    delivered: list[CanonicalEvent] = []
    while live:  # a random interleaving that keeps each (topic, key) queue in order
        queue = live[rnd.randrange(len(live))]
        delivered.append(queue.pop(0))
        live = [q for q in live if q]
    for src, at in draw(st.lists(st.tuples(st.integers(0, len(clean) - 1),
                                           st.integers(0, len(clean))), max_size=40)):
        delivered.insert(min(at, len(delivered)), clean[src])
    return clean, delivered, draw(st.integers(1, 60))


@pytest.fixture(params=testing.BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql" and (why := testing.pg_available()):
        pytest.skip(why)
    return request.param


@pytest.fixture
def runner(backend: str, tmp_path: Path) -> Iterator[Callable[..., dict]]:
    stores: dict[str, ProjectionSink] = {}
    with testing.open_test_store(backend, tmp_path) as store:
        def run(name: str, events: list[CanonicalEvent], batch: int) -> dict:
            if name not in stores:
                projection = _build(name)
                prepare(store, projection)
                stores[name] = ProjectionSink(store, projection)
            sink = stores[name]
            testing.reset(store, sink.projection)
            testing.apply_events(sink, events, batch)
            return testing.dump(store, sink.projection)

        yield run


def _pool(corpus: list[CanonicalEvent], name: str) -> list[CanonicalEvent]:
    topics = set(_build(name).topics)
    return [e for e in corpus if canonical_topic(e.resource_type) in topics]


def _check(runner: Callable[..., dict], name: str, case: tuple[list, list, int]) -> None:
    clean, delivered, batch = case
    expected = runner(name, clean, len(clean))
    assert runner(name, delivered, batch) == expected


_SETTINGS = settings(max_examples=25, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("name", ["ehr", "billing", "analytics"])
def test_any_keyed_order_with_duplicates_converges(
    runner: Callable[..., dict], corpus: list[CanonicalEvent], name: str
) -> None:
    pool = _pool(corpus, name)
    assert pool, f"no corpus events for {name}"

    @_SETTINGS
    @given(deliveries(pool))
    def prop(case: tuple[list, list, int]) -> None:
        _check(runner, name, case)

    prop()
