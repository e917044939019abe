"""The HL7 flow: MLLP -> hl7.raw.v1 -> canonicalizer -> fhir.*.v1 -> EHR read model.

``run_mllp_flow`` drives the real components (listener, canonicalizer, EHR projection)
against whatever cluster ``settings`` points at: the embedded broker or real Kafka and
Schema Registry containers. ``assert_mllp_outcome`` is the one definition of what must come
out; both tiers call it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from fhirbus.consumers.canonicalizer import SiteConfig
from fhirbus.consumers.canonicalizer import app as canonicalizer
from fhirbus.kafka.config import resolve_bootstrap, resolve_registry_url
from fhirbus.producers.mllp.client import MllpClient, ack_code
from fhirbus.projections import app as projections
from fhirbus.projections import queries
from fhirbus.projections.store import open_store
from fhirbus.schemas.envelope import CanonicalEvent
from fhirbus.schemas.serde import EnvelopeSerde, registry_client
from fhirbus.schemas.topics import RAW_HL7, canonical_topic, dead_letter_topic
from fhirbus.settings import Settings
from tests.kafka_helpers import headers_of, read_all


def oru(control_id: str, mrn: str, status: str, value: str) -> bytes:
    return "\r".join([
        f"MSH|^~\\&|LIS|LAB|EHR|HOSP|20260301101500+0100||ORU^R01^ORU_R01|{control_id}|P|2.5.1",
        f"PID|1||{mrn}^^^HOSP^MR||Doe^Jane^Q||19800102|F",
        f"OBR|1|PL1|FL-{mrn}^LIS|24331-1^Lipid panel^LN|||20260301080000+0100|||||||||||||||"
        f"20260301101000+0100|||{status}",
        f"OBX|1|NM|2093-3^Cholesterol^LN||{value}|mmol/L^^UCUM|3.0-5.2|H|||{status}|||"
        "20260301080000+0100",
    ]).encode() + b"\r"


def flow_messages(tag: str) -> list[bytes]:
    """A preliminary then a final result for one patient, and an ACK nobody can map."""
    return [oru(f"P{tag}", f"MRN{tag}", "P", "5.4"), oru(f"F{tag}", f"MRN{tag}", "F", "5.6"),
            f"MSH|^~\\&|A|B|C|D|20260301||ACK|X{tag}|P|2.5\rMSA|AA|P{tag}\r".encode()]


@dataclass
class MllpOutcome:
    tag: str
    sent: list[bytes]
    acks: list[str]
    raw: list[bytes]
    events: dict[str, list[CanonicalEvent]]
    dead: list[tuple[bytes, dict[str, str]]]
    chart: dict[str, Any]


def run_mllp_flow(settings: Settings, host: str, port: int, tag: str, tmp: Path,
                  timeout_s: float = 30) -> MllpOutcome:
    """Send over MLLP to a running listener, then canonicalize and project what arrived."""
    sent = flow_messages(tag)
    with MllpClient(host, port, timeout_s=timeout_s) as client:
        acks = [ack_code(client.send(m)) for m in sent]
    bootstrap = resolve_bootstrap(settings)
    raw = [m.value() for m in read_all(bootstrap, RAW_HL7, 10**6, timeout_s=2)
           if m.value() in sent]
    canonicalizer.run(settings, SiteConfig(), group_id=f"canon-{tag}", idle_exit_s=5,
                      install_signals=False)
    serde = EnvelopeSerde(registry_client(resolve_registry_url(settings)))
    events: dict[str, list[CanonicalEvent]] = {}
    for rtype in ("Patient", "Observation", "DiagnosticReport"):
        topic = canonical_topic(rtype)
        decoded = [serde.deserialize(m.value(), topic)
                   for m in read_all(bootstrap, topic, 10**6, timeout_s=2)]
        events[rtype] = [e for e in decoded if (e.source.message_control_id or "").endswith(tag)]
    dead = [(m.value(), headers_of(m))
            for m in read_all(bootstrap, dead_letter_topic("canonicalizer"), 10**6, timeout_s=2)
            if headers_of(m).get("hl7.msh10") == f"X{tag}"]
    dsn = f"sqlite://{tmp / f'ehr-{tag}.sqlite'}"
    ehr_settings = settings.model_copy(update={
        "projections": settings.projections.model_copy(update={"dsn": dsn})})
    projections.run("ehr", ehr_settings, group=f"ehr-{tag}", idle_exit_s=5,
                    install_signals=False)
    patient = events["Patient"][0].resource_id if events["Patient"] else ""
    store = open_store(dsn)
    try:
        chart = queries.patient_chart(store, patient)
    finally:
        store.close()
    return MllpOutcome(tag, sent, acks, raw, events, dead, chart)


def assert_mllp_outcome(out: MllpOutcome) -> None:
    # Durable before ACK: every message is AA and on the raw topic exactly once, as sent.
    assert out.acks == ["AA", "AA", "AA"]
    assert sorted(out.raw) == sorted(out.sent)
    # Canonical events: one Observation resource, a preliminary then a final version.
    obs, reports, patients = (out.events[t] for t in ("Observation", "DiagnosticReport",
                                                     "Patient"))
    assert (len(obs), len(reports), len(patients)) == (2, 2, 2)
    assert len({e.resource_id for e in obs}) == 1
    prelim, final = sorted(obs, key=lambda e: e.resource_version)
    assert (prelim.event_type, final.event_type) == ("observation.preliminary",
                                                     "observation.final")
    assert Counter(e.key for e in obs + reports) == {patients[0].resource_id: 4}
    assert orjson.loads(final.resource)["valueQuantity"]["value"] == 5.6
    assert final.source.raw_topic == RAW_HL7 and final.source.message_control_id == f"F{out.tag}"
    # The ACK cannot be mapped: dead-lettered once with its reason and its original bytes.
    assert len(out.dead) == 1
    value, headers = out.dead[0]
    assert value == out.sent[2]
    assert headers["dlq.error_type"] == "UnsupportedMessageType"
    assert headers["dlq.stage"] == "canonicalizer"
    # The EHR read model: the patient's chart holds the final result, at its latest version.
    chart = out.chart
    assert chart["patient"] is not None and chart["patient_id"] == patients[0].resource_id
    results = {r["id"]: r for r in chart["results"]}
    assert results[final.resource_id]["status"] == "final"
    assert results[final.resource_id]["version"] == final.resource_version
