"""EHR projection contract tests, run once per backend (SQLite file, PostgreSQL schema):
versions, duplicates, stale versions, merges, results before their patient, history."""

from __future__ import annotations

import pytest
from confluent_kafka import OFFSET_BEGINNING

from fhirbus.projections import ehr, queries, testing
from fhirbus.projections.core import Fact, Versioned
from fhirbus.projections.sink import ProjectionSink, prepare
from fhirbus.projections.store import Store
from fhirbus.schemas.envelope import CanonicalEvent

MSH = "MSH|^~\\&|LIS|LAB|EHR|HOSP|{ts}||{type}|{ctl}|P|2.5.1"
PID = "PID|1||{mrn}^^^HOSP^MR||{family}^{given}||19800102|F|||12 Elm St^^Springfield^IL^62701"


def oru(status: str, ts: str, value: str, mrn: str = "MRN100", ctl: str = "C1") -> str:
    return "\n".join([
        MSH.format(ts=ts, type="ORU^R01^ORU_R01", ctl=ctl),
        PID.format(mrn=mrn, family="Doe", given="Jane"),
        f"OBR|1|PL1|FL1^LIS|24331-1^Lipid panel^LN|||{ts}|||||||||||||||{ts}|||{status}",
        f"OBX|1|NM|2093-3^Cholesterol^LN||{value}|mmol/L^^UCUM|3.0-5.2|H|||{status}",
    ])


def adt_a01(mrn: str, ts: str, visit: str, ctl: str) -> str:
    return "\n".join([
        MSH.format(ts=ts, type="ADT^A01^ADT_A01", ctl=ctl),
        f"EVN|A01|{ts}",
        PID.format(mrn=mrn, family="Roe", given="Rich"),
        f"PV1|1|I|W^1^1||||||||||||||||{visit}",
    ])


def a40(survivor: str, retired: str, ts: str) -> str:
    return "\n".join([
        MSH.format(ts=ts, type="ADT^A40^ADT_A39", ctl="M1"),
        f"EVN|A40|{ts}",
        PID.format(mrn=survivor, family="Roe", given="Rich"),
        f"MRG|{retired}^^^HOSP^MR",
    ])


def of(events: list[CanonicalEvent], rtype: str) -> list[CanonicalEvent]:
    return [e for e in events if e.resource_type == rtype]


@pytest.fixture
def sink(store: Store) -> ProjectionSink:
    projection = ehr.build()
    prepare(store, projection)
    return ProjectionSink(store, projection)


def test_project_is_pure_and_typed() -> None:
    events = testing.map_hl7(oru("F", "20260301101500", "6.1"))
    obs = of(events, "Observation")[0]
    (effect,) = ehr.project(obs)
    assert isinstance(effect, Versioned) and effect.table == "results"
    assert effect.key == obs.resource_id and effect.version == obs.resource_version
    row = dict(zip(ehr.RESULTS.columns, effect.values, strict=True))
    assert row["code"] == "2093-3" and row["status"] == "final" and row["value"] == "6.1"
    assert row["patient_id"] == obs.subject_key and row["interpretation"] == "H"
    assert ehr.project(obs) == [effect]


def test_merge_events_yield_the_same_link_from_either_side() -> None:
    events = testing.map_hl7(a40("MRN-S", "MRN-R", "20260301120000"))
    merged, retired = of(events, "Patient")
    links = {e.row for ev in (merged, retired) for e in ehr.project(ev) if isinstance(e, Fact)}
    assert links == {(retired.resource_id, merged.resource_id)}


def test_duplicates_are_no_ops_and_stale_versions_are_ignored(sink: ProjectionSink,
                                                              store: Store) -> None:
    prelim = testing.map_hl7(oru("P", "20260301100000", "5.0", ctl="C1"))
    final = testing.map_hl7(oru("F", "20260301110000", "6.1", ctl="C2"))
    first = testing.apply_events(sink, final)
    assert first["applied"] == len(final) and first["stale"] == 0
    again = testing.apply_events(sink, final + prelim)
    assert again["duplicates"] == len(final)
    assert again["stale"] == len([e for e in prelim if e.resource_type != "Patient"]) + 1
    obs_id = of(final, "Observation")[0].resource_id
    chart = queries.patient_chart(store, of(final, "Patient")[0].resource_id)
    (result,) = [r for r in chart["results"] if r["id"] == obs_id]
    assert result["status"] == "final" and result["value"] == "6.1"
    statuses = [h["status"] for h in queries.result_history(store, obs_id)]
    assert statuses == ["preliminary", "final"], "the stale version is kept as history"


def test_result_history_lists_every_version(sink: ProjectionSink, store: Store) -> None:
    events = [e for i, (s, ts, v) in enumerate([("P", "20260301100000", "5.0"),
                                                ("F", "20260301110000", "6.1"),
                                                ("C", "20260301120000", "5.9")])
              for e in testing.map_hl7(oru(s, ts, v, ctl=f"C{i}"), i)]
    testing.apply_events(sink, events, batch=2)
    obs_id = of(events, "Observation")[0].resource_id
    history = queries.result_history(store, obs_id)
    assert [h["status"] for h in history] == ["preliminary", "final", "corrected"]
    assert [h["resource"]["valueQuantity"]["value"] for h in history] == [5.0, 6.1, 5.9]
    chart = queries.patient_chart(store, events[0].resource_id)
    assert [r["status"] for r in chart["results"] if r["id"] == obs_id] == ["corrected"]


def test_a_result_before_its_patient_is_kept_and_joins_later(sink: ProjectionSink,
                                                             store: Store) -> None:
    events = testing.map_hl7(oru("F", "20260301101500", "6.1"))
    patient = of(events, "Patient")[0]
    testing.apply_events(sink, [e for e in events if e.resource_type != "Patient"])
    early = queries.patient_chart(store, patient.resource_id)
    assert early["patient"] is None and len(early["results"]) == 2
    testing.apply_events(sink, [patient])
    late = queries.patient_chart(store, patient.resource_id)
    assert late["patient"]["family"] == "Doe" and late["results"] == early["results"]


@pytest.mark.parametrize("merge_first", [True, False])
def test_chart_resolves_merges_to_the_survivor(sink: ProjectionSink, store: Store,
                                               merge_first: bool) -> None:
    retired_visit = testing.map_hl7(adt_a01("MRN-R", "20260301080000", "V1", "A1"))
    survivor_visit = testing.map_hl7(adt_a01("MRN-S", "20260301090000", "V2", "A2"))
    merge = testing.map_hl7(a40("MRN-S", "MRN-R", "20260301120000"))
    visits = retired_visit + survivor_visit
    testing.apply_events(sink, merge + visits if merge_first else visits + merge)
    survivor, retired = of(merge, "Patient")
    for asked in (survivor.resource_id, retired.resource_id):
        chart = queries.patient_chart(store, asked)
        assert chart["patient_id"] == survivor.resource_id
        assert chart["merged_ids"] == [retired.resource_id]
        assert {e["id"] for e in chart["encounters"]} == {
            e.resource_id for e in of(visits, "Encounter")}
    retired_row = queries.patient_chart(store, retired.resource_id)["patient"]
    assert retired_row["id"] == survivor.resource_id and retired_row["active"] == 1


def test_positions_and_counters_commit_with_the_batch(sink: ProjectionSink) -> None:
    events = testing.map_hl7(oru("F", "20260301101500", "6.1"))
    effects = [e for ev in events for e in ehr.project(ev)]
    sink.apply_effects(effects, {("fhir.observation.v1", 3): 42}, len(events))
    sink.apply_effects([], {("fhir.observation.v1", 3): 17}, 0)  # never moves back
    assert sink.stored_positions([("fhir.observation.v1", 3), ("x", 0)]) == {
        ("fhir.observation.v1", 3): 42, ("x", 0): OFFSET_BEGINNING}


class _Boom(Exception):
    pass


def test_a_failed_batch_leaves_neither_rows_nor_positions(sink: ProjectionSink,
                                                          store: Store) -> None:
    events = testing.map_hl7(oru("F", "20260301101500", "6.1"))
    effects = [e for ev in events for e in ehr.project(ev)]
    original = sink.projection.apply

    def failing(tx: object, p: str, fx: object) -> object:
        original(tx, p, fx)  # type: ignore[arg-type]
        raise _Boom()

    object.__setattr__(sink.projection, "apply", failing)
    with pytest.raises(_Boom):
        sink.apply_effects(effects, {("t", 0): 9}, len(events))
    object.__setattr__(sink.projection, "apply", original)
    assert sink.stored_positions([("t", 0)]) == {("t", 0): OFFSET_BEGINNING}
    assert all(not rows for rows in testing.dump(store, sink.projection).values())
