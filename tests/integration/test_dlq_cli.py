"""``fhirbus dlq list|show|purge|history`` against the embedded broker, on dead letters built
by the runtime's own builder (consumers/deadletter.py) and written to a private DLQ topic."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime

import orjson
import pytest

from fhirbus import cli
from fhirbus.consumers.canonicalizer.errors import MissingRequiredField
from fhirbus.consumers.deadletter import dead_letter
from fhirbus.consumers.records import Record
from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.kafka.config import producer_config, resolve_registry_url
from fhirbus.kafka.producer import Producer
from fhirbus.schemas.envelope import CanonicalEvent, Source, stable_id
from fhirbus.schemas.serde import EnvelopeSerde, registry_client
from fhirbus.settings import Settings
from tests.kafka_helpers import read_all

PHI = ("Roe", "Richard", "MRN777", "19700101")


def oru(control_id: str) -> bytes:
    return (f"MSH|^~\\&|LIS|LAB|EHR|HOSP|20260301||ORU^R01|{control_id}|P|2.5.1\r"
            "PID|1||MRN777^^^HOSP^MR||Roe^Richard||19700101|M\r").encode()


def fhirbus(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def dlq_topic(embedded_stack: EmbeddedStack, settings: Settings, unique: str) -> str:
    """Three dead letters: two with a PHI-free reason, one whose message quotes content."""
    topic, raw = f"dlq.test-{unique}.v1", f"raw-{unique}"
    embedded_stack.create_topic(topic, 1)
    errors = [MissingRequiredField("PID-3", "no patient identifier"),
              MissingRequiredField("PID-3", "no patient identifier"),
              KeyError("Roe^Richard")]
    producer = Producer(producer_config(settings))
    for i, error in enumerate(errors):
        record = Record.detached(raw, 0, i, oru(f"C{i}"), b"lab",
                                 [("fhirbus.listener_id", b"mllp-1"), ("hl7.msh10", b"C%d" % i)])
        pub = dead_letter(record, topic=topic, stage="canonicalizer", group="g1", error=error,
                          error_class="permanent", attempts=1,
                          first_failed_at=datetime.now(UTC), trace_id=None)
        producer.send(pub.topic, pub.value, pub.key, pub.headers)
    assert producer.flush(30) == 0
    producer.close()
    return topic


def test_list_and_show_never_print_phi_without_the_flag(dlq_topic: str) -> None:
    code, out, err = fhirbus("dlq", "list", "--topic", dlq_topic)
    assert code == 0 and "3 record(s)" in err
    assert out.count("reason=missing_required_field path=PID-3") == 2
    assert "KeyError (message withheld" in out
    code, shown, _ = fhirbus("dlq", "show", "--topic", dlq_topic, "0:2")
    assert code == 0 and "PID-5: ***^***" in shown and "MSH-9: ORU^R01" in shown
    assert not any(p in out + shown for p in PHI)
    code, shown, _ = fhirbus("dlq", "show", "--topic", dlq_topic, f"{dlq_topic}:0:2",
                             "--show-phi", "--json")
    doc = orjson.loads(shown)
    assert doc["error"]["error_message"] == "'Roe^Richard'"
    assert doc["original"]["position"] == [0, 2] and doc["phi_shown"] is True
    code, _, err = fhirbus("dlq", "show", "--topic", dlq_topic, "0:99")
    assert code == 1 and "no record 0:99" in err
    code, _, err = fhirbus("dlq", "list", "--topic", dlq_topic, "--since", "yesterday")
    assert code == 2 and "--since: expected an ISO-8601" in err


def test_purge_needs_confirmation_is_audited_and_hides_records(
    dlq_topic: str, embedded_stack: EmbeddedStack
) -> None:
    code, _, err = fhirbus("dlq", "purge", "--topic", dlq_topic, "--id", "0:0")
    assert code == 1 and "needs confirmation" in err  # stdin is not a terminal in tests
    code, _, err = fhirbus("dlq", "purge", "--topic", dlq_topic)
    assert code == 2 and "without a filter" in err
    code, out, _ = fhirbus("dlq", "list", "--topic", dlq_topic, "--json")
    assert len(out.splitlines()) == 3  # nothing changed

    code, out, _ = fhirbus("dlq", "purge", "--topic", dlq_topic, "--id", "0:0", "--yes",
                           "--delete-records", "--actor", "alice")
    # The embedded (mock) broker does not implement DeleteRecords: said plainly, exit 1,
    # and the purge still holds in the audit store.
    assert code == 1 and "1 record(s) marked purged" in out
    assert "DeleteRecords failed" in out and "stay on the topic" in out
    assert len(read_all(embedded_stack.bootstrap, dlq_topic, 3, timeout_s=5)) == 3

    code, out, _ = fhirbus("dlq", "list", "--topic", dlq_topic, "--json")
    assert [orjson.loads(line)["id"] for line in out.splitlines()] == ["0:1", "0:2"]
    code, out, _ = fhirbus("dlq", "list", "--topic", dlq_topic, "--json", "--include-purged")
    assert orjson.loads(out.splitlines()[0])["state"] == "purged"
    code, out, _ = fhirbus("dlq", "replay", "--topic", dlq_topic, "--id", "0:0", "--dry-run")
    assert "0 would replay" in out  # a purged record is never replayed
    code, out, _ = fhirbus("dlq", "history", "--topic", dlq_topic)
    assert "purge" in out and "alice" in out and '"ids":["' + dlq_topic + ':0:0"]' in out


def test_canonical_event_dead_letters_decode_through_the_registry_and_stay_masked(
    embedded_stack: EmbeddedStack, settings: Settings, unique: str
) -> None:
    topic = f"dlq.proj-{unique}.v1"
    embedded_stack.create_topic(topic, 1)
    serde = EnvelopeSerde(registry_client(resolve_registry_url(settings)))
    resource = {"resourceType": "Patient", "id": stable_id("p", unique),
                "name": [{"family": "Roe", "given": ["Richard"]}], "birthDate": "1970-01-01"}
    event = CanonicalEvent(
        event_id=stable_id("e", unique), event_type="patient.upserted", resource_type="Patient",
        resource_id=resource["id"], resource_version=1,
        occurred_at=datetime(2026, 3, 1, tzinfo=UTC), recorded_at=datetime(2026, 3, 1, tzinfo=UTC),
        source=Source(kind="hl7v2", system="ADT^HOSP", feed="adt", message_control_id="A9"),
        mapping_version="t-1", resource=orjson.dumps(resource), subject_key="MRN777")
    record = Record.detached("fhir.patient.v1", 3, 12, serde.serialize(event, "fhir.patient.v1"),
                             b"MRN777", [("fhirbus.event_type", b"patient.upserted")])
    pub = dead_letter(record, topic=topic, stage="projection-ehr", group="fhirbus-projection-ehr",
                      error=RuntimeError("row for MRN777 violates constraint"),
                      error_class="exhausted", attempts=5, first_failed_at=datetime.now(UTC),
                      trace_id=None)
    producer = Producer(producer_config(settings))
    producer.send(pub.topic, pub.value, pub.key, pub.headers)
    assert producer.flush(30) == 0
    producer.close()

    code, out, _ = fhirbus("dlq", "list", "--topic", topic, "--json",
                           "--source-system", "ADT^HOSP", "--message-type", "patient.upserted")
    assert code == 0
    row = orjson.loads(out)
    assert row["stage"] == "projection-ehr" and row["error_class"] == "exhausted"
    assert row["reason"].startswith("RuntimeError (message withheld")
    code, out, _ = fhirbus("dlq", "show", "--topic", topic, "0:0", "--json")
    assert code == 0
    value = orjson.loads(out)["original"]["value"]
    assert value["format"] == "avro:CanonicalEvent"
    envelope = value["envelope"]
    assert envelope["event_type"] == "patient.upserted" and envelope["subject_key"] == "***"
    assert envelope["resource"]["resourceType"] == "Patient"
    assert envelope["resource"]["name"] == [{"family": "***", "given": ["***"]}]
    assert not any(p in out for p in PHI) and "1970" not in out
