"""``fhirbus canonicalize`` on CDC topics, on the embedded broker: Debezium change events on
``cdc.<source>.labbilling.<table>`` in, validated canonical FHIR events with CDC provenance
out, tombstones skipped, bad rows and unmapped tables dead-lettered with their bytes."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from fhirbus.consumers.canonicalizer import SiteConfig, app
from fhirbus.consumers.canonicalizer.cdc import samples as s
from fhirbus.consumers.canonicalizer.validate import validate
from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.kafka.config import producer_config, resolve_registry_url
from fhirbus.kafka.producer import Producer
from fhirbus.schemas.envelope import CanonicalEvent
from fhirbus.schemas.serde import EnvelopeSerde, registry_client
from fhirbus.schemas.topics import canonical_topic, dead_letter_topic
from fhirbus.settings import Settings
from tests.kafka_helpers import headers_of, read_all


def events(stack: EmbeddedStack, serde: EnvelopeSerde, rtype: str, source: str,
           expected: int) -> list[CanonicalEvent]:
    topic, out = canonical_topic(rtype), []
    for msg in read_all(stack.bootstrap, topic, expected, timeout_s=20):
        event = serde.deserialize(msg.value(), topic)
        if event.source.system == source:
            assert msg.key() == event.key.encode()
            out.append(event)
    return out


@pytest.mark.slow
def test_change_events_become_canonical_events_and_bad_ones_are_dead_lettered(
    embedded_stack: EmbeddedStack, settings: Settings, unique: str
) -> None:
    src = f"lb{unique}"
    topic = {t: f"cdc.{src}.labbilling.{t}" for t in ("patients", "lab_results", "charges",
                                                       "audit_log")}
    for name in topic.values():
        embedded_stack.create_topic(name, 2)

    def ev(table: str, op: str, before: dict | None, after: dict | None, **kw: object) -> dict:
        return s.change(table, op, before, after, source=src, **kw)  # type: ignore[arg-type]

    lab, charge = s.lab_row(7, 1), s.charge_row(9, 1)
    toast = s.lab_row(8, 1, comment="__debezium_unavailable_value")
    audit = ev("audit_log", "c", None, {"happened_at": "2026-03-01T10:00:00Z", "actor": "a",
                                        "action": "b"})
    records = [
        ("patients", 1, ev("patients", "c", None, s.patient_row(1), lsn=100)),
        ("patients", 1, ev("patients", "u", None, s.patient_row(1, version=2), lsn=200)),
        ("lab_results", 7, ev("lab_results", "r", None, lab, lsn=50, snapshot="last")),
        ("lab_results", 7, ev("lab_results", "c", None, lab, lsn=300)),  # snapshot overlap
        ("lab_results", 7, ev("lab_results", "d", {"id": 7}, None, lsn=400)),
        ("lab_results", 7, None),  # the delete's tombstone
        ("lab_results", 8, ev("lab_results", "u", None, toast, lsn=450)),
        ("charges", 9, ev("charges", "c", None, charge, lsn=500, tx=777)),
        ("charges", 9, ev("charges", "d", charge, None, lsn=600)),
        ("charges", 9, None),
        ("audit_log", 0, audit),
    ]
    producer = Producer(producer_config(settings))
    for table, pk, value in records:
        producer.send(topic[table], s.encode(value, with_schema=table == "charges"),
                      key=s.key(pk) if pk else None)
    assert producer.flush(30) == 0

    done = app.run(settings, SiteConfig(), topics=[rf"^cdc\.{src}\..*"],
                   group_id=f"canon-{unique}", max_records=len(records), idle_exit_s=20,
                   install_signals=False)
    assert done == len(records)

    serde = EnvelopeSerde(registry_client(resolve_registry_url(settings)))
    patients = events(embedded_stack, serde, "Patient", src, 2)
    observations = events(embedded_stack, serde, "Observation", src, 3)
    charges = events(embedded_stack, serde, "ChargeItem", src, 2)
    assert (len(patients), len(observations), len(charges)) == (2, 3, 2)
    for e in patients + observations + charges:
        validate(orjson.loads(e.resource))
        assert e.source.kind == "cdc" and e.source.feed == src
        assert e.source.raw_topic == topic[e.source.table.split(".")[1]]  # type: ignore[union-attr]
        assert e.mapping_version.startswith("cdc-labbilling.")
    assert sorted(e.resource_version for e in patients) == [1, 2]
    pid = patients[0].resource_id
    assert all(e.key == pid for e in charges)  # full images: keyed by their patient
    # Snapshot read and streamed insert of the same row state: one event id.
    snap, streamed = sorted((e for e in observations if e.event_type == "observation.final"),
                            key=lambda e: int(e.source.lsn or 0))
    assert snap.event_id == streamed.event_id and snap.source.lsn == "50"
    (deleted,) = [e for e in observations if e.event_type == "observation.deleted"]
    assert orjson.loads(deleted.resource)["status"] == "entered-in-error"
    assert deleted.resource_id == snap.resource_id
    assert snap.key == streamed.key == pid
    assert deleted.key == f"Observation/{deleted.resource_id}"  # key-only: patient unknown
    assert Counter(e.event_type for e in charges) == {"chargeitem.billable": 1,
                                                      "chargeitem.deleted": 1}
    billable = next(e for e in charges if e.event_type == "chargeitem.billable")
    assert (billable.source.lsn, billable.source.tx_id) == ("500", 777)
    assert billable.source.table == "labbilling.charges"

    dead = [m for m in read_all(embedded_stack.bootstrap, dead_letter_topic("canonicalizer"), 2)
            if headers_of(m).get("dlq.original_topic", "").startswith(f"cdc.{src}.")]
    reasons = {headers_of(m)["dlq.original_topic"]: headers_of(m)["dlq.error_message"]
               for m in dead}
    assert reasons == {
        topic["lab_results"]: "reason=cdc_unavailable_value path=labbilling.lab_results.comment"
        " detail=unchanged TOAST value not sent; set REPLICA IDENTITY FULL on the table or "
        "stop mapping this column",
        topic["audit_log"]: "reason=cdc_unmapped_table path=labbilling.audit_log "
        "detail=no mapping file declares this table",
    }
    originals = {headers_of(m)["dlq.original_topic"]: m.value() for m in dead}
    assert originals[topic["audit_log"]] == s.encode(audit)
    assert originals[topic["lab_results"]] == s.encode(records[6][2])
