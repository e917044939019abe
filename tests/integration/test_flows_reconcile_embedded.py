"""The reconciliation flow on the embedded broker. Its docker-tier twin
(tests/docker/test_docker_reconcile_flow.py) runs the same flow and assertions
(tests/flows/reconcile.py) on real Kafka and Schema Registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhirbus.settings import Settings
from tests.flows.dlq import fhirbus
from tests.flows.reconcile import assert_reconcile_outcome, run_reconcile_flow

pytestmark = pytest.mark.slow


def test_a_lost_read_model_row_is_found_repaired_and_converges(
    settings: Settings, tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcome = run_reconcile_flow(settings, unique, tmp_path, monkeypatch.setenv, idle_s=1.5)
    assert_reconcile_outcome(outcome)
    # The compose `reconciler` service's command, bounded to one run: converged, it exits 0.
    code, _, err = fhirbus("reconcile", "schedule", "--every", "1s", "--max-runs", "1",
                           "--checks", "canonical", "--projections", "ehr")
    assert code == 0, err
