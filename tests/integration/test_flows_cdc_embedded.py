"""The CDC flow on the embedded broker, through the in-process slot reader (`fhirbus cdc
run`). Its docker-tier twin (tests/docker/test_docker_debezium_flow.py) runs the same flow
and the same assertions (tests/flows/cdc.py) with Debezium on Kafka Connect instead."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from fhirbus.connectors.cdc.reader import CdcReader, run
from fhirbus.connectors.sources import SourceDeclaration
from fhirbus.consumers.canonicalizer.cdc import EXAMPLE_MAPPINGS
from fhirbus.settings import Settings
from tests.cdc_helpers import PG_DSN, pg_unavailable, private_source
from tests.flows.cdc import CdcSource, assert_cdc_outcome, run_cdc_flow

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
if (why := pg_unavailable()) is not None:
    pytestmark = [*pytestmark, pytest.mark.skip(reason=why)]


def _mappings_for(schema: str, folder: Path) -> Path:
    """The example mappings, pointed at the test's private copy of the schema."""
    folder.mkdir()
    for path in EXAMPLE_MAPPINGS.glob("*.yaml"):
        (folder / path.name).write_text(path.read_text().replace("labbilling.", f"{schema}."))
    return folder


def _drain(source: SourceDeclaration, settings: Settings) -> None:
    reader = CdcReader(source, settings)
    try:
        run(reader, threading.Event(), idle_exit_s=0.3)
    finally:
        reader.close()


def test_postgres_rows_through_the_slot_reader_to_the_read_models(
    settings: Settings, tmp_path: Path
) -> None:
    with private_source(snapshot="initial") as source:
        schema = source.tables[0].schema_name
        settings = settings.model_copy(update={"cdc": settings.cdc.model_copy(
            update={"mappings_dir": _mappings_for(schema, tmp_path / "mappings")})})
        _drain(source, settings)  # creates the slot: what follows is streamed, not snapshot
        outcome = run_cdc_flow(settings, CdcSource(source.name, schema, PG_DSN), 4711,
                               tmp_path, capture=lambda: _drain(source, settings), idle_s=1.5)
    assert_cdc_outcome(outcome)
