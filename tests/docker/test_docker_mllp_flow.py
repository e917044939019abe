"""Twin of tests/integration/test_flows_embedded.py on real Kafka and Schema Registry: the
same flow function and the same assertions (tests/flows/mllp.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

from fhirbus.settings import Settings
from tests.flows.mllp import assert_mllp_outcome, run_mllp_flow
from tests.integration.test_hl7_listener_support import listener_settings, running_listener


def test_mllp_to_raw_to_canonical_to_ehr_read_model(settings_for: Settings,
                                                     tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    with running_listener(listener_settings(settings_for, tmp_path)) as listener:
        outcome = run_mllp_flow(settings_for, "127.0.0.1", listener.port, tag, tmp_path)
    assert_mllp_outcome(outcome)
