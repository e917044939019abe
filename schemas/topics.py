"""The topic catalog: one declaration of every topic fhirbus reads or writes.

Major schema versions live in topic names (``fhir.patient.v1``): a breaking envelope change
means new ``.v2`` topics that run side by side with ``.v1`` until consumers move.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Classification = Literal["phi", "deidentified", "operational"]
CleanupPolicy = Literal["delete", "compact", "compact,delete"]

DAY_MS = 24 * 3600 * 1000
ENVELOPE_SUBJECT = "fhirbus.canonical.CanonicalEvent"
ENVELOPE_MAJOR = 1

# Resource types with a canonical topic; the HL7 and CDC mappings may only emit these.
CANONICAL_RESOURCES: tuple[str, ...] = (
    "Patient",
    "Encounter",
    "Observation",
    "DiagnosticReport",
    "Specimen",
    "ServiceRequest",
    "ChargeItem",
    "Account",
    "Appointment",
    "Immunization",
    "DocumentReference",
)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    value_format: str
    partitions: int
    classification: Classification
    owner: str
    description: str
    retention_ms: int = 7 * DAY_MS
    cleanup_policy: CleanupPolicy = "delete"
    replication: int = 3
    extra_config: dict[str, str] = field(default_factory=dict)

    def kafka_config(self) -> dict[str, str]:
        """Topic-level configs for CreateTopics / AlterConfigs on a real cluster."""
        config = {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}
        if self.replication > 1:
            config["min.insync.replicas"] = str(min(2, self.replication))
        return {**config, **self.extra_config}


def canonical_topic(resource_type: str, major: int = ENVELOPE_MAJOR) -> str:
    return f"fhir.{resource_type.lower()}.v{major}"


def cdc_topic(source: str, schema: str, table: str) -> str:
    """Debezium's default naming with ``topic.prefix = cdc.<source>``; both CDC paths use it."""
    return f"cdc.{source}.{schema}.{table}"


CDC_TOPIC_PREFIX = "cdc."


def dead_letter_topic(stage: str) -> str:
    return f"dlq.{stage}.v1"


RAW_HL7 = "hl7.raw.v1"
REJECTED_HL7 = "hl7.rejected.v1"
REPLAY = "fhirbus.replay.v1"

# Stages that own a dead-letter topic; the consumer runtime writes to dead_letter_topic(stage).
DEAD_LETTER_STAGES: tuple[str, ...] = (
    "canonicalizer",
    "projection-ehr",
    "projection-billing",
    "projection-analytics",
    "reconciler",
)


def _canonical(resource: str) -> TopicSpec:
    return TopicSpec(
        name=canonical_topic(resource),
        key="subject_key (patient key); resource id when the resource has no patient",
        value_format=f"avro:{ENVELOPE_SUBJECT}",
        partitions=6,
        classification="phi",
        owner="canonicalizer",
        description=f"Canonical FHIR R4 {resource} events in the CanonicalEvent envelope.",
        retention_ms=-1,
        cleanup_policy="delete",
    )


def _dead_letter(stage: str) -> TopicSpec:
    return TopicSpec(
        name=dead_letter_topic(stage),
        key="the original record's key",
        value_format="original bytes; error context in headers",
        partitions=1,
        classification="phi",
        owner=stage,
        description=f"Records {stage} could not process, with their reason and original bytes.",
        retention_ms=30 * DAY_MS,
    )


CATALOG: tuple[TopicSpec, ...] = (
    TopicSpec(
        name=RAW_HL7,
        key="feed id (listener/sending facility), so one feed stays in arrival order",
        value_format="HL7 v2 bytes exactly as received; metadata in headers",
        partitions=4,
        classification="phi",
        owner="hl7-listener",
        description="Every accepted inbound HL7 v2 message, before any interpretation.",
        retention_ms=30 * DAY_MS,
    ),
    TopicSpec(
        name=REJECTED_HL7,
        key="feed id",
        value_format="original bytes; reason in headers",
        partitions=1,
        classification="phi",
        owner="hl7-listener",
        description="Inbound messages answered with a negative ACK, kept with their reason.",
        retention_ms=30 * DAY_MS,
    ),
    TopicSpec(
        name=REPLAY,
        key="resource key",
        value_format=f"avro:{ENVELOPE_SUBJECT}",
        partitions=6,
        classification="phi",
        owner="reconciler",
        description="Canonical events re-emitted by reconciliation and operator replays.",
    ),
    *(_canonical(r) for r in CANONICAL_RESOURCES),
    *(_dead_letter(s) for s in DEAD_LETTER_STAGES),
)


def by_name() -> dict[str, TopicSpec]:
    return {spec.name: spec for spec in CATALOG}
