"""Billing: a correction is one reversal plus one new charge, a cancellation one reversal,
a replay of the whole history changes no balance; on SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import pytest

from fhirbus.projections import billing, queries, testing
from fhirbus.projections.sink import ProjectionSink, prepare
from fhirbus.projections.store import Store
from fhirbus.schemas.envelope import CanonicalEvent
from tests.corpus import HL7_CORPUS


def dft(txn: str, when: str, amount: str, kind: str = "CG", account: str = "ACC1") -> str:
    return "\n".join([
        f"MSH|^~\\&|PAS|HOSP|BILL|HOSP|{when}||DFT^P03|{txn}-{when}|P|2.5.1",
        f"EVN|P03|{when}",
        f"PID|1||MRN7^^^HOSP^MR||Doe^Jane||19800102|F|||||||||{account}",
        f"FT1|1|{txn}||{when}||{kind}|71045^Xray chest^CPT|||1|{amount}&USD",
    ])


def charges(*messages: str) -> list[CanonicalEvent]:
    return [e for i, m in enumerate(messages) for e in testing.map_hl7(m, i)
            if e.resource_type == "ChargeItem"]


@pytest.fixture
def sink(store: Store) -> ProjectionSink:
    projection = billing.build(billing.BillingOptions({"57698-3": Decimal("12.50")}))
    prepare(store, projection)
    return ProjectionSink(store, projection)


def test_ledger_entries_are_a_function_of_the_version_set() -> None:
    f = {"billable": 1, "amount_cents": 500, "encounter_key": "Encounter/e", "currency": "USD"}
    versions = [(1, "a", f), (2, "b", {**f, "amount_cents": 300}), (3, "c", {"billable": 0})]
    rows = billing.ledger_entries("ChargeItem/x", versions)
    assert rows == billing.ledger_entries("ChargeItem/x", versions[::-1])
    assert [(r[2], r[4], r[5]) for r in rows] == [
        (1, "charge", 500), (1, "reversal", -500), (2, "charge", 300), (2, "reversal", -300)]


def test_a_corrected_charge_shows_one_reversal_and_one_new_charge(
    sink: ProjectionSink, store: Store
) -> None:
    original, corrected = charges(dft("T1", "20260301100000", "100.00"),
                                  dft("T1", "20260301110000", "80.00"))
    assert original.resource_id == corrected.resource_id
    assert corrected.resource_version > original.resource_version
    testing.apply_events(sink, [original])
    (key,) = queries.balances(store)
    assert queries.balances(store) == {key: 10000}
    testing.apply_events(sink, [corrected])
    entries = queries.ledger(store)
    assert [(e["kind"], e["amount_cents"]) for e in entries] == [
        ("charge", 10000), ("reversal", -10000), ("charge", 8000)]
    assert len({e["entry_key"] for e in entries}) == 3
    assert queries.balances(store) == {key: 8000}


def test_a_cancelled_charge_is_reversed_never_double_counted(
    sink: ProjectionSink, store: Store
) -> None:
    events = charges(dft("T2", "20260301100000", "55.10"),
                     dft("T2", "20260301120000", "55.10", kind="X"))
    testing.apply_events(sink, events + events + events[:1], batch=1)
    assert [(e["kind"], e["amount_cents"]) for e in queries.ledger(store)] == [
        ("charge", 5510), ("reversal", -5510)]
    assert set(queries.balances(store).values()) == {0}


def test_replaying_the_whole_history_twice_changes_no_balance(
    sink: ProjectionSink, store: Store
) -> None:
    history = testing.corpus_events(HL7_CORPUS) + charges(
        dft("T3", "20260301100000", "100.00"), dft("T3", "20260301110000", "80.00"),
        dft("T4", "20260301100000", "42.00", account="ACC2"),
        dft("T4", "20260302100000", "42.00", kind="X", account="ACC2"),
    )
    first = testing.apply_events(sink, history, batch=37)
    balances, ledger = queries.balances(store), queries.ledger(store)
    assert first["applied"] > 0 and balances
    for _ in range(2):
        again = testing.apply_events(sink, history, batch=50)
        assert again["applied"] == 0 and again["stale"] == 0
        assert queries.balances(store) == balances and queries.ledger(store) == ledger


def test_completed_orders_are_charged_where_prices_are_configured(
    sink: ProjectionSink, store: Store
) -> None:
    orders = [e for e in testing.corpus_events(HL7_CORPUS, ["orm"])
              if e.resource_type == "ServiceRequest"]
    testing.apply_events(sink, orders)
    priced = [e for e in queries.ledger(store) if e["source_key"].startswith("ServiceRequest/")]
    assert [e["kind"] for e in priced] == ["charge"] * 4, "four completed, none reversed"
    for entry in priced:
        assert entry["code"] == "57698-3" and entry["amount_cents"] == 1250
    assert sink.projection.topics == ("fhir.chargeitem.v1", "fhir.servicerequest.v1")
    plain = billing.build(billing.BillingOptions({}))
    assert plain.topics == ("fhir.chargeitem.v1",), "orders are read only when priced"


def test_charges_with_a_visit_number_balance_on_the_adt_encounter(
    sink: ProjectionSink, store: Store
) -> None:
    # Regression: DFT ChargeItems named no encounter, so balances fell back to the account.
    visit = "PV1|1|I|W1^101^A||||||||||||||||V42^^^HOSP^VN"
    first, second = (dft(t, w, a) + "\n" + visit for t, w, a in
                     (("T1", "20260301100000", "100.00"), ("T2", "20260301120000", "25.00")))
    admit = testing.map_hl7("\n".join([
        "MSH|^~\\&|ADT|HOSP|EHR|HOSP|20260301090000||ADT^A01|A1|P|2.5.1",
        "EVN|A01|20260301090000",
        "PID|1||MRN7^^^HOSP^MR||Doe^Jane||19800102|F",
        visit,
    ]))
    (encounter,) = [e for e in admit if e.resource_type == "Encounter"]
    testing.apply_events(sink, charges(first, second))
    assert queries.balances(store) == {f"Encounter/{encounter.resource_id}": 12500}
