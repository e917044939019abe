"""Twin of tests/integration/test_flows_dlq_embedded.py on real Kafka and Schema Registry:
the same dead-letter replay flow and the same assertions (tests/flows/dlq.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from fhirbus.kafka.config import client_config
from fhirbus.settings import Settings
from tests.flows.dlq import assert_dlq_outcome, run_dlq_flow


def test_dead_letters_replayed_after_a_fix_reach_the_ehr_once(
    settings_for: Settings, tmp_path: Path
) -> None:
    admin = AdminClient(client_config(settings_for))

    def make_topic(name: str) -> None:
        replication = settings_for.kafka_topic_replication or 3
        for future in admin.create_topics([NewTopic(name, 2, replication)]).values():
            future.result(30)

    outcome = run_dlq_flow(settings_for, uuid.uuid4().hex[:8], tmp_path, make_topic)
    assert_dlq_outcome(outcome)
