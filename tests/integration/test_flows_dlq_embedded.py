"""The dead-letter replay flow on the embedded broker. Its docker-tier twin
(tests/docker/test_docker_dlq_flow.py) runs the same flow and assertions (tests/flows/dlq.py)
on real Kafka and Schema Registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.settings import Settings
from tests.flows.dlq import assert_dlq_outcome, run_dlq_flow

pytestmark = pytest.mark.slow


def test_dead_letters_replayed_after_a_fix_reach_the_ehr_once(
    embedded_stack: EmbeddedStack, settings: Settings, tmp_path: Path, unique: str
) -> None:
    outcome = run_dlq_flow(settings, unique, tmp_path,
                           make_topic=lambda name: embedded_stack.create_topic(name, 2),
                           idle_s=1.5)
    assert_dlq_outcome(outcome)
