"""``fhirbus canonicalize`` on the embedded broker: raw HL7 in, canonical events out, and
unmappable messages dead-lettered with their reason and original bytes."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from fhirbus.consumers.canonicalizer import SiteConfig, app
from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.kafka.config import producer_config, resolve_registry_url
from fhirbus.kafka.producer import Producer
from fhirbus.schemas.envelope import CanonicalEvent
from fhirbus.schemas.serde import EnvelopeSerde, registry_client
from fhirbus.schemas.topics import canonical_topic, dead_letter_topic
from fhirbus.settings import Settings
from tests.kafka_helpers import headers_of, read_all


def oru(control_id: str, mrn: str, status: str = "F", value: str = "5.4") -> bytes:
    return "\r".join([
        f"MSH|^~\\&|LIS|LAB|EHR|HOSP|20260301101500+0100||ORU^R01^ORU_R01|{control_id}|P|2.5.1",
        f"PID|1||{mrn}^^^HOSP^MR||Doe^Jane^Q||19800102|F",
        "OBR|1|PL1|FL-" + mrn + "^LIS|24331-1^Lipid panel^LN|||20260301080000+0100|||||||||||||||"
        f"20260301101000+0100|||{status}",
        f"OBX|1|NM|2093-3^Cholesterol^LN||{value}|mmol/L^^UCUM|3.0-5.2|H|||{status}|||"
        "20260301080000+0100",
        "NTE|1||fasting sample",
        f"OBX|2|ST|13457-7^LDL calc^LN||see note||||||{status}",
    ]).encode() + b"\r"


def raw_headers(control_id: str) -> list[tuple[str, bytes]]:
    return [
        ("fhirbus.received_at", b"2026-03-01T09:15:00.123+00:00"),
        ("fhirbus.peer", b"127.0.0.1:5000"),
        ("fhirbus.listener_id", b"mllp-test"),
        ("hl7.msh9", b"ORU^R01^ORU_R01"),
        ("hl7.msh10", control_id.encode()),
        ("hl7.msh12", b"2.5.1"),
        ("hl7.charset", b"ascii"),
    ]


def produce(settings: Settings, topic: str, feed: str, payloads: list[tuple[str, bytes]]) -> None:
    producer = Producer(producer_config(settings))
    for control_id, raw in payloads:
        producer.send(topic, raw, key=feed, headers=raw_headers(control_id))
    assert producer.flush(30) == 0


def events_for(stack: EmbeddedStack, serde: EnvelopeSerde, rtype: str, feed: str,
               expected: int) -> list[CanonicalEvent]:
    topic = canonical_topic(rtype)
    out = []
    for msg in read_all(stack.bootstrap, topic, expected, timeout_s=20):
        event = serde.deserialize(msg.value(), topic)
        if event.source.feed == feed:
            assert msg.key() == event.key.encode()
            out.append(event)
    return out


@pytest.mark.slow
def test_raw_records_become_canonical_events_and_bad_ones_are_dead_lettered(
    embedded_stack: EmbeddedStack, settings: Settings, unique: str
) -> None:
    raw_topic, feed = f"raw-{unique}", f"lab-{unique}"
    embedded_stack.create_topic(raw_topic, 2)
    ack = b"MSH|^~\\&|A|B|C|D|20260301||ACK|X1|P|2.5\rMSA|AA|M1\r"
    produce(settings, raw_topic, feed, [
        ("M1", oru("M1", f"MRN{unique}", "P")),
        ("M2", oru("M2", f"MRN{unique}", "F", "5.6")),
        ("X1", ack),
    ])

    done = app.run(settings, SiteConfig(), topics=[raw_topic], group_id=f"canon-{unique}",
                   max_records=3, idle_exit_s=15, install_signals=False)
    assert done == 3

    serde = EnvelopeSerde(registry_client(resolve_registry_url(settings)))
    observations = events_for(embedded_stack, serde, "Observation", feed, 4)
    reports = events_for(embedded_stack, serde, "DiagnosticReport", feed, 2)
    patients = events_for(embedded_stack, serde, "Patient", feed, 2)
    assert len(observations) == 4 and len(reports) == 2 and len(patients) == 2
    assert Counter(e.event_type for e in observations) == {
        "observation.preliminary": 2, "observation.final": 2}
    # One resource per OBX across both messages; the final is a newer version of it.
    by_id: dict[str, list[CanonicalEvent]] = {}
    for e in observations:
        by_id.setdefault(e.resource_id, []).append(e)
    assert len(by_id) == 2
    for versions in by_id.values():
        prelim, final = sorted(versions, key=lambda e: e.resource_version)
        assert (prelim.event_type, final.event_type) == (
            "observation.preliminary", "observation.final")
    patient_id = patients[0].resource_id
    assert all(e.key == patient_id for e in observations + reports)
    chol = next(e for e in observations if e.event_type == "observation.final"
                and b"2093-3" in e.resource)
    resource = orjson.loads(chol.resource)
    assert resource["valueQuantity"] == {
        "value": 5.6, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"}
    assert resource["meta"]["source"] == "hl7v2://LIS/LAB#M2"
    assert chol.source.raw_topic == raw_topic and chol.source.raw_offset is not None
    assert chol.source.message_control_id == "M2" and chol.source.feed == feed
    assert chol.recorded_at.isoformat() == "2026-03-01T09:15:00.123000+00:00"

    dead = [m for m in read_all(embedded_stack.bootstrap, dead_letter_topic("canonicalizer"), 1)
            if headers_of(m).get("dlq.original_topic") == raw_topic]
    assert len(dead) == 1
    h = headers_of(dead[0])
    assert dead[0].value() == ack
    assert h["dlq.error_message"] == "reason=unsupported_message_type path=MSH-9 detail=ACK"
    assert h["dlq.error_type"] == "UnsupportedMessageType"
    assert h["dlq.stage"] == "canonicalizer"
    assert h["hl7.msh10"] == "X1"  # the original headers ride along
