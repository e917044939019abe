"""Twin of tests/integration/test_flows_cdc_embedded.py on real Kafka: the change events come
from Debezium on Kafka Connect (the connector `fhirbus connectors apply` created, conftest
``brought_up``) instead of the in-process slot reader. Same flow, same assertions
(tests/flows/cdc.py): the event shape, canonical events, provenance, EHR and billing."""

from __future__ import annotations

import uuid
from pathlib import Path

from fhirbus.settings import Settings
from tests.flows.cdc import CdcSource, assert_cdc_outcome, run_cdc_flow


def test_debezium_changes_reach_the_ehr_and_billing_read_models(
    settings_for: Settings, source_dsn: str, tmp_path: Path
) -> None:
    row_id = int(uuid.uuid4().int % 10**9)  # the source database outlives a test run
    outcome = run_cdc_flow(settings_for, CdcSource("labbilling", "labbilling", source_dsn),
                           row_id, tmp_path, capture=lambda: None, timeout_s=120)
    assert_cdc_outcome(outcome)
