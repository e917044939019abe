"""Twin of tests/integration/test_flows_reconcile_embedded.py on real Kafka and Schema
Registry: the same reconciliation flow and the same assertions (tests/flows/reconcile.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from fhirbus.settings import Settings
from tests.flows.reconcile import assert_reconcile_outcome, run_reconcile_flow


def test_a_lost_read_model_row_is_found_repaired_and_converges(
    settings_for: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcome = run_reconcile_flow(settings_for, uuid.uuid4().hex[:8], tmp_path,
                                 monkeypatch.setenv)
    assert_reconcile_outcome(outcome)
