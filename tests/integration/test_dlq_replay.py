"""Acceptance for ``fhirbus dlq``: a mapping bug (a site field override that reads the wrong
HL7 field) dead-letters the lab results of one feed; after the fix, ``fhirbus dlq replay``
with a filter sends exactly those back, the fixed canonicalizer maps exactly those, and a
second replay changes nothing downstream (canonical topics and the EHR read model)."""

from __future__ import annotations

import io
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import orjson
import pytest

from fhirbus import cli
from fhirbus.consumers.canonicalizer import SiteConfig, app, load_site_config
from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.kafka.config import producer_config, resolve_registry_url
from fhirbus.kafka.producer import Producer
from fhirbus.projections import app as projections
from fhirbus.projections import queries
from fhirbus.schemas.envelope import CanonicalEvent
from fhirbus.schemas.serde import EnvelopeSerde, registry_client
from fhirbus.schemas.topics import canonical_topic
from fhirbus.settings import Settings
from tests.integration.test_canonicalizer import oru
from tests.kafka_helpers import read_all

DLQ = "dlq.canonicalizer.v1"
# The bug: DiagnosticReport.issued from OBR-4 (the service code) instead of a time; every
# ORU of the feed fails FHIR validation. The fix removes the override.
BROKEN_SITE = """
[feeds.{feed}]
timezone = "Europe/Berlin"

[[feeds.{feed}.field_overrides]]
resource = "DiagnosticReport"
element = "issued"
source = "OBR-4"
"""
SURNAME = "Doe"


def adt(control_id: str, mrn: str) -> bytes:
    return "\r".join([
        f"MSH|^~\\&|ADT|HOSP|EHR|HOSP|20260301090000+0100||ADT^A04^ADT_A01|{control_id}|P|2.5.1",
        "EVN|A04|20260301090000+0100",
        f"PID|1||{mrn}^^^HOSP^MR||{SURNAME}^Jane^Q||19800102|F",
        "PV1|1|O|CLINIC^^^HOSP||||||||||||||||V" + control_id,
    ]).encode() + b"\r"


def ack(control_id: str) -> bytes:
    return f"MSH|^~\\&|LIS|LAB|C|D|20260301||ACK|{control_id}|P|2.5\rMSA|AA|M1\r".encode()


def fhirbus(*argv: str) -> tuple[int, str, str]:
    """The real CLI entry point, in process, with its output captured."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def canonicalize(settings: Settings, site: SiteConfig, raw_topic: str, group: str,
                 max_records: int | None, idle_s: float = 6.0) -> int:
    return app.run(settings, site, topics=[raw_topic], group_id=group, max_records=max_records,
                   idle_exit_s=idle_s, install_signals=False)


def feed_events(stack: EmbeddedStack, serde: EnvelopeSerde, rtype: str, feed: str,
                expected: int) -> list[CanonicalEvent]:
    topic = canonical_topic(rtype)
    events = [serde.deserialize(m.value(), topic)
              for m in read_all(stack.bootstrap, topic, expected, timeout_s=10)]
    return [e for e in events if e.source.feed == feed]


@pytest.mark.slow
def test_replay_after_a_mapping_fix_processes_exactly_the_failed_messages_once(
    embedded_stack: EmbeddedStack, settings: Settings, unique: str, tmp_path: Path
) -> None:
    raw_topic, feed, group = f"raw-{unique}", f"lab-{unique}", f"canon-{unique}"
    embedded_stack.create_topic(raw_topic, 2)
    site_file = tmp_path / "site.toml"
    site_file.write_text(BROKEN_SITE.format(feed=feed))
    producer = Producer(producer_config(settings))
    messages = [("R1", oru("R1", f"MRN{unique}")), ("R2", oru("R2", f"MRN{unique}", "F", "5.9")),
                ("R3", oru("R3", f"MRX{unique}")), ("A1", adt("A1", f"MRN{unique}")),
                ("K1", ack("K1"))]
    for control_id, raw in messages:
        producer.send(raw_topic, raw, key=feed, headers=[("hl7.msh10", control_id.encode())])
    assert producer.flush(30) == 0
    producer.close()

    # 1. The bug: the three ORUs are dead-lettered (the ACK too, for its own reason).
    assert canonicalize(settings, load_site_config(site_file), raw_topic, group, 5) == 5
    code, out, _ = fhirbus("dlq", "list", "--json", "--original-topic", raw_topic)
    assert code == 0
    rows = [orjson.loads(line) for line in out.splitlines()]
    assert Counter(r["message_type"] for r in rows) == {"ORU^R01": 3, "ACK": 1}
    oru_rows = [r for r in rows if r["message_type"] == "ORU^R01"]
    assert all(r["reason"].startswith("reason=invalid_fhir_resource path=DiagnosticReport.issued")
               for r in oru_rows), oru_rows
    assert {r["source_system"] for r in oru_rows} == {"LIS/LAB"}
    assert SURNAME not in out and f"MRN{unique}" not in out  # no PHI in the listing

    serde = EnvelopeSerde(registry_client(resolve_registry_url(settings)))
    assert feed_events(embedded_stack, serde, "DiagnosticReport", feed, 0) == []
    assert len(feed_events(embedded_stack, serde, "Patient", feed, 1)) == 1  # the ADT mapped

    # 2. The fix, then replay only the ORUs of this raw topic.
    code, out, err = fhirbus("dlq", "replay", "--topic", DLQ, "--message-type", "ORU",
                             "--original-topic", raw_topic, "--actor", "ops-tester")
    assert code == 0, err
    assert "3 replayed, 0 already replayed" in out
    assert canonicalize(settings, SiteConfig(), raw_topic, group, 3) == 3

    reports = feed_events(embedded_stack, serde, "DiagnosticReport", feed, 3)
    assert sorted(e.source.message_control_id for e in reports) == ["R1", "R2", "R3"]
    observations = feed_events(embedded_stack, serde, "Observation", feed, 6)
    assert len(observations) == 6
    assert all(e.source.message_control_id != "K1" for e in observations + reports)
    patients = feed_events(embedded_stack, serde, "Patient", feed, 4)
    before = {e.event_id for e in reports + observations + patients}

    # 3. A second replay is a no-op: the toolset skips them, nothing new reaches Kafka.
    code, out, _ = fhirbus("dlq", "replay", "--topic", DLQ, "--message-type", "ORU",
                           "--original-topic", raw_topic, "--actor", "ops-tester")
    assert code == 0 and "0 replayed, 3 already replayed" in out
    assert canonicalize(settings, SiteConfig(), raw_topic, group, None, idle_s=2) == 0
    assert len(feed_events(embedded_stack, serde, "DiagnosticReport", feed, 3)) == 3

    # 4. Even forced, replaying again changes nothing downstream: same event ids, and the
    #    EHR read model is identical (its duplicates counter goes up instead).
    assert projections.run("ehr", settings, max_records=None, idle_exit_s=4,
                           install_signals=False) > 0
    patient_id = next(e for e in observations).key
    chart_before = _chart(settings, patient_id)
    code, out, _ = fhirbus("dlq", "replay", "--topic", DLQ, "--message-type", "ORU",
                           "--original-topic", raw_topic, "--force", "--actor", "ops-tester")
    assert "3 replayed" in out
    assert canonicalize(settings, SiteConfig(), raw_topic, group, 3) == 3
    reports = feed_events(embedded_stack, serde, "DiagnosticReport", feed, 6)
    observations = feed_events(embedded_stack, serde, "Observation", feed, 12)
    patients = feed_events(embedded_stack, serde, "Patient", feed, 7)
    assert len(reports) == 6 and len(observations) == 12
    assert {e.event_id for e in reports + observations + patients} == before
    assert projections.run("ehr", settings, max_records=None, idle_exit_s=4,
                           install_signals=False) > 0
    assert _chart(settings, patient_id) == chart_before

    # 5. The audit trail names who replayed what.
    code, out, _ = fhirbus("dlq", "history", "--topic", DLQ)
    lines = [line for line in out.splitlines() if raw_topic in line]
    assert len(lines) == 3 and all("ops-tester" in line for line in lines)
    assert sum("done=3" in line for line in lines) == 2


def _chart(settings: Settings, patient_id: str) -> dict:
    store = projections.open_for("ehr", settings)
    try:
        return queries.patient_chart(store, patient_id)
    finally:
        store.close()
