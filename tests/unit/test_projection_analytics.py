"""Analytics holds de-identified facts only: every column of every table is scanned for every
name, address, MRN, identifier and raw id fed in; aggregates; the secret is required."""

from __future__ import annotations

import re
from dataclasses import replace

import orjson
import pytest

from fhirbus.cli import main
from fhirbus.consumers.canonicalizer.identity import VERSION_TIME_FACTOR
from fhirbus.projections import analytics, app, queries, testing
from fhirbus.projections.core import Effect, Versioned
from fhirbus.projections.sink import ProjectionSink, prepare
from fhirbus.projections.store import Store
from fhirbus.schemas.envelope import CanonicalEvent
from fhirbus.settings import ConfigError, Settings
from tests.corpus import HL7_CORPUS

OPTS = analytics.AnalyticsOptions(b"test-secret-0123456789", "day")
TOKEN = re.compile(r"^[0-9a-f]{64}$")


def oru(mrn: str, family: str, street: str, loinc: str, flag: str, ts: str, ctl: str) -> str:
    return "\n".join([
        f"MSH|^~\\&|LIS|LAB|EHR|HOSP|{ts}||ORU^R01^ORU_R01|{ctl}|P|2.5.1",
        f"PID|1||{mrn}^^^HOSP^MR~SSN-{mrn}^^^SSA^SS||{family}^Quentina^Xavia||19700101|F|||"
        f"{street}^^Zyxville^ZZ^98765-4321||^PRN^PH^^^555^8675309",
        f"OBR|1|P-{ctl}|F-{ctl}^LIS|24331-1^Lipid panel^LN|||{ts}|||||||||||||||{ts}|||F",
        f"OBX|1|NM|{loinc}^Analyte^LN||7.5|mmol/L^^UCUM|3.0-5.2|{flag}|||F",
    ])


def adt(event: str, klass: str, visit: str, ts: str) -> str:
    return "\n".join([
        f"MSH|^~\\&|PAS|HOSP|EHR|HOSP|{ts}||ADT^{event}^ADT_A01|{visit}|P|2.5.1",
        f"EVN|{event}|{ts}",
        "PID|1||MRN-QX-4471^^^HOSP^MR||Zebulonski^Quentina||19700101|F",
        f"PV1|1|{klass}|W^1^1||||||||||||||||{visit}",
    ])


@pytest.fixture
def sink(store: Store) -> ProjectionSink:
    projection = analytics.build(OPTS)
    prepare(store, projection)
    return ProjectionSink(store, projection)


def crafted_events() -> list[CanonicalEvent]:
    crafted = [
        oru("MRN-QX-4471", "Zebulonski", "4471 Quixote Lane", "2093-3", "H",
            "20260301101500", "Q1"),
        oru("MRN-QX-4471", "Zebulonski", "4471 Quixote Lane", "2093-3", "N",
            "20260301111500", "Q2"),
        oru("MRN-WV-9902", "Wyvernheart", "9902 Wyvern Road", "718-7", "L",
            "20260302091500", "Q3"),
        adt("A04", "O", "VN-1", "20260301080000"),
        adt("A04", "O", "VN-2", "20260302080000"),
        adt("A01", "I", "VN-3", "20260302090000"),
    ]
    return [e for i, m in enumerate(crafted) for e in testing.map_hl7(m, i)]


def fed_events() -> list[CanonicalEvent]:
    return crafted_events() + testing.corpus_events(HL7_CORPUS)


def sensitive_values(events: list[CanonicalEvent]) -> set[str]:
    """Names, addresses, identifiers and telecom of every patient; every raw id."""
    values: set[str] = set()
    for ev in events:
        values |= {ev.resource_id, ev.event_id, ev.subject_key or ""}
        if ev.resource_type != "Patient":
            continue
        body = orjson.loads(ev.resource)
        for name in body.get("name") or []:
            values |= {name.get("family") or "", name.get("text") or "", *name.get("given", [])}
        for addr in body.get("address") or []:
            values |= {*addr.get("line", []), addr.get("city") or "",
                       addr.get("postalCode") or "", addr.get("district") or ""}
        values |= {i.get("value") or "" for i in body.get("identifier") or []}
        values |= {t.get("value") or "" for t in body.get("telecom") or []}
    return {v for v in values if v and len(v) >= 2}


def all_cells(store: Store) -> list[tuple[str, str]]:
    with store.transaction(lock=False) as tx:
        if tx.dialect == "sqlite":
            tables = [r[0] for r in tx.execute("SELECT name FROM sqlite_master WHERE "
                                               "type = 'table'")]
        else:
            tables = [r[0] for r in tx.execute("SELECT table_name FROM information_schema."
                                               "tables WHERE table_schema = current_schema()")]
        return [(t, str(v)) for t in tables for row in tx.execute(f"SELECT * FROM {t}")
                for v in row if v is not None and not _sink_counter(t, v)]


def _sink_counter(table: str, value: object) -> bool:
    # The sink's own counters (events, batches, apply microseconds) hold no event content;
    # a timing such as 3121 us once equalled a fed house number and failed the scan.
    return table.endswith("_stats") and isinstance(value, int)


def test_no_name_address_mrn_or_raw_identifier_in_any_column(sink: ProjectionSink,
                                                             store: Store) -> None:
    events = fed_events()
    testing.apply_events(sink, events, batch=64)
    values = sensitive_values(events)
    assert {"Zebulonski", "4471 Quixote Lane", "MRN-QX-4471", "Zyxville"} <= values
    cells = all_cells(store)
    assert len(cells) > 500, "the scan must see the facts"
    leaks = [(table, v) for table, cell in cells for v in values
             if cell == v or (len(v) >= 6 and not TOKEN.match(cell) and v in cell)]
    assert leaks == []


def test_aggregates_over_deidentified_facts(sink: ProjectionSink, store: Store) -> None:
    testing.apply_events(sink, crafted_events(), batch=10)
    volumes = queries.daily_result_volumes(store)
    assert ("2026-03-01", "2093-3", 2) in volumes and ("2026-03-02", "718-7", 1) in volumes
    rates = {code: (n, a) for code, n, a, _ in queries.abnormal_rates(store)}
    assert rates["2093-3"] == (2, 1) and rates["718-7"] == (1, 1)
    assert queries.encounter_counts_by_class(store) == {"AMB": 2, "IMP": 1}
    same = {r[0] for r in _facts(store) if r[1] == "2093-3"}
    assert len(same) == 1, "one patient, one token, across both results"


def _facts(store: Store) -> list[tuple[str, str]]:
    with queries.reading(store, "analytics") as (tx, p):
        return tx.execute(f"SELECT patient_token, loinc FROM {p}result_facts")


def test_dates_are_coarsened_as_configured() -> None:
    assert analytics.coarsen("2026-03-05T10:15:00+01:00", "day") == "2026-03-05"
    assert analytics.coarsen("2026-03-05T10:15:00+01:00", "week") == "2026-03-02"
    assert analytics.coarsen("2026-03-05", "month") == "2026-03-01"
    assert analytics.coarsen("2026-03", "month") == "2026-03-01"
    assert analytics.coarsen(None, "day") is None


def test_tokens_depend_on_the_secret() -> None:
    other = analytics.AnalyticsOptions(b"another-secret", "day")
    assert OPTS.token("Patient", "p1") != other.token("Patient", "p1")
    assert OPTS.token("Patient", "p1") == OPTS.token("Patient", "p1")


def test_missing_secret_stops_the_projection_naming_the_setting(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match="FHIRBUS_PROJECTIONS__ANALYTICS_SECRET"):
        app.build_projection("analytics", settings)
    assert main(["project", "analytics", "--max-records", "1"]) == 2
    assert "FHIRBUS_PROJECTIONS__ANALYTICS_SECRET" in capsys.readouterr().err


def _integer_cells(store: Store) -> list[tuple[str, int]]:
    return [(t, int(v)) for t, v in all_cells(store)
            if t.startswith("analytics_") and v.lstrip("-").isdigit()]


def test_no_stored_number_gives_a_fact_its_exact_time_back(store: Store) -> None:
    # Regression: versions (source time in ms x 10,000 + rank) were stored as they are,
    # so with granularity "month" every fact still carried its time to the millisecond.
    opts = analytics.AnalyticsOptions(OPTS.secret, "month")
    projection = analytics.build(opts)
    prepare(store, projection)
    events = crafted_events()
    testing.apply_events(ProjectionSink(store, projection), events, batch=4)
    times = {e.resource_version // VERSION_TIME_FACTOR for e in events}
    numbers = _integer_cells(store)
    assert len(numbers) > 10, "the scan must see the versions"
    day_ms = 86_400_000
    near = [(t, n) for t, n in numbers for ms in times
            if abs(n // VERSION_TIME_FACTOR - ms) < 366 * day_ms]
    assert near == []


def test_versions_stored_raw_are_shifted_by_the_migration(store: Store) -> None:
    older, newer = (testing.map_hl7(oru("MRN-QX-4471", "Zebulonski", "4471 Quixote Lane",
                                        "2093-3", flag, ts, "V1"), n)
                    for n, (flag, ts) in enumerate((("H", "20260301101500"),
                                                    ("N", "20260301111500"))))
    new = analytics.build(OPTS)

    def unshifted(event: CanonicalEvent) -> list[Effect]:  # as before the migration
        return [replace(e, version=e.version - OPTS.offset(e.key))
                if isinstance(e, Versioned) else e for e in new.project(event)]

    old = replace(new, migrations=analytics.BASE_MIGRATIONS, project=unshifted)
    prepare(store, old)
    testing.apply_events(ProjectionSink(store, old), newer)
    prepare(store, new)  # migration 3 shifts what the old code stored
    stale = testing.apply_events(ProjectionSink(store, new), older)
    assert stale["stale"] >= 1 and stale["applied"] == 0
    with queries.reading(store, "analytics") as (tx, p):
        rows = tx.execute(f"SELECT id, version, abnormal FROM {p}result_facts")
    observation = next(e for e in newer if e.resource_type == "Observation")
    [(key, version, abnormal)] = rows
    assert (version, abnormal) == (OPTS.version(key, observation.resource_version), 0)
