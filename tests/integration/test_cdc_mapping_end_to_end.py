"""End to end on real systems: rows written to the local PostgreSQL -> the CDC slot reader
(``fhirbus cdc run``, in process) -> Debezium events on the embedded broker -> the
canonicalizer with the example mappings -> validated canonical FHIR events."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson
import psycopg
import pytest

from fhirbus.connectors.cdc.reader import CdcReader, run
from fhirbus.consumers.canonicalizer import SiteConfig, app
from fhirbus.consumers.canonicalizer.cdc import EXAMPLE_MAPPINGS
from fhirbus.consumers.canonicalizer.cdc.mapper import RETIRED_VERSION
from fhirbus.consumers.canonicalizer.validate import validate
from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.kafka.config import resolve_registry_url
from fhirbus.schemas.envelope import CanonicalEvent
from fhirbus.schemas.serde import EnvelopeSerde, registry_client
from fhirbus.schemas.topics import canonical_topic
from fhirbus.settings import Settings
from tests.cdc_helpers import PG_DSN, pg_unavailable, private_source
from tests.kafka_helpers import read_all

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
if (why := pg_unavailable()) is not None:
    pytestmark = [*pytestmark, pytest.mark.skip(reason=why)]


def sql(*statements: str) -> None:
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def mappings_for(schema: str, folder: Path) -> Path:
    """The example mappings, retargeted at the test's private copy of the schema."""
    folder.mkdir()
    for path in EXAMPLE_MAPPINGS.glob("*.yaml"):
        (folder / path.name).write_text(path.read_text().replace("labbilling.", f"{schema}."))
    return folder


def events(stack: EmbeddedStack, serde: EnvelopeSerde, rtype: str, source: str,
           expected: int) -> list[CanonicalEvent]:
    topic = canonical_topic(rtype)
    decoded = [serde.deserialize(m.value(), topic)
               for m in read_all(stack.bootstrap, topic, expected, timeout_s=20)]
    return sorted((e for e in decoded if e.source.system == source),
                  key=lambda e: e.resource_version)


def test_postgres_rows_become_canonical_fhir_events(
    embedded_stack: EmbeddedStack, settings: Settings, unique: str, tmp_path: Path
) -> None:
    with private_source(snapshot="initial") as source:
        s = source.tables[0].schema_name
        sql(f"INSERT INTO {s}.patients (id, mrn, family_name, given_name, birth_date, sex) "
            "VALUES (1, 'MRN1', 'Doe', 'Jo', '1980-02-03', 'F')")
        settings = settings.model_copy(update={"cdc": settings.cdc.model_copy(
            update={"mappings_dir": mappings_for(s, tmp_path / "mappings")})})
        drain(source, settings)  # the initial snapshot: patient 1 as op r
        sql(f"INSERT INTO {s}.lab_results (id, patient_id, loinc_code, test_name, "
            "value_numeric, unit, status, collected_at) VALUES (7, 1, '2345-7', 'Glucose', "
            "5.4, 'mmol/L', 'F', '2026-03-01 08:00+00')",
            f"UPDATE {s}.lab_results SET status = 'C', value_numeric = 5.6, row_version = 2 "
            "WHERE id = 7",
            f"INSERT INTO {s}.charges (id, patient_id, charge_code, quantity, unit_price, "
            "status, service_date) VALUES (9, 1, 'LAB01', 2, 12.50, 'billable', '2026-03-01')",
            f"DELETE FROM {s}.charges WHERE id = 9",
            f"UPDATE {s}.patients SET active = false, row_version = 2 WHERE id = 1")
        drain(source, settings)

        done = app.run(settings, SiteConfig(), topics=[source.topic(t) for t in source.tables],
                       group_id=f"canon-{unique}", max_records=7, idle_exit_s=20,
                       install_signals=False)
        assert done == 7  # r + u, c + u, c + d + tombstone

    serde = EnvelopeSerde(registry_client(resolve_registry_url(settings)))
    patients = events(embedded_stack, serde, "Patient", source.name, 2)
    results = events(embedded_stack, serde, "Observation", source.name, 2)
    charges = events(embedded_stack, serde, "ChargeItem", source.name, 2)
    for e in patients + results + charges:
        validate(orjson.loads(e.resource))
        assert e.source.kind == "cdc" and e.source.lsn and e.source.tx_id
    assert [e.resource_version for e in patients] == [1, 2]
    assert [orjson.loads(e.resource)["active"] for e in patients] == [True, False]
    assert [e.event_type for e in results] == ["observation.final", "observation.corrected"]
    assert orjson.loads(results[1].resource)["valueQuantity"]["value"] == 5.6
    assert {e.key for e in results} == {patients[0].resource_id}
    assert [e.event_type for e in charges] == ["chargeitem.billable", "chargeitem.deleted"]
    assert charges[1].resource_version == RETIRED_VERSION  # REPLICA IDENTITY DEFAULT: key only
    assert orjson.loads(charges[0].resource)["priceOverride"] == {"value": 25, "currency": "USD"}


def drain(source: object, settings: Settings) -> None:
    reader = CdcReader(source, settings)  # type: ignore[arg-type]
    try:
        run(reader, threading.Event(), idle_exit_s=0.3)
    finally:
        reader.close()
