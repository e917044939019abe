"""The end-to-end flows on the embedded broker. Their docker-tier twins (tests/docker/) run
the same flow functions and the same assertions (tests/flows/) against real Kafka."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhirbus.settings import Settings
from tests.flows.mllp import assert_mllp_outcome, run_mllp_flow

from .test_hl7_listener_support import listener_settings, running_listener

pytestmark = pytest.mark.slow


def test_mllp_to_raw_to_canonical_to_ehr_read_model(
    settings: Settings, tmp_path: Path, unique: str
) -> None:
    with running_listener(listener_settings(settings, tmp_path)) as listener:
        outcome = run_mllp_flow(settings, "127.0.0.1", listener.port, unique, tmp_path)
    assert_mllp_outcome(outcome)
