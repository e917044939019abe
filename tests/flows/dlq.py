"""The dead-letter replay flow: a mapping bug dead-letters one feed's lab results; after the
fix, ``fhirbus dlq replay`` sends exactly those back, the fixed canonicalizer maps them once,
a second replay changes nothing, and the EHR read model ends with the results.

``run_dlq_flow`` drives the real canonicalizer, the real ``fhirbus dlq`` command line (in
process) and the EHR projection against whatever cluster ``settings`` points at (the
embedded broker or real Kafka). ``assert_dlq_outcome`` is the one definition of the outcome.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from fhirbus import cli
from fhirbus.consumers.canonicalizer import SiteConfig, load_site_config
from fhirbus.consumers.canonicalizer import app as canonicalizer
from fhirbus.kafka.config import producer_config, resolve_bootstrap, resolve_registry_url
from fhirbus.kafka.producer import Producer
from fhirbus.projections import app as projections
from fhirbus.projections import queries
from fhirbus.projections.store import open_store
from fhirbus.schemas.envelope import CanonicalEvent
from fhirbus.schemas.serde import EnvelopeSerde, registry_client
from fhirbus.schemas.topics import canonical_topic
from fhirbus.settings import Settings
from tests.flows.mllp import oru
from tests.kafka_helpers import read_all

DLQ = "dlq.canonicalizer.v1"
# The bug: DiagnosticReport.issued read from OBR-4 (the service code), so every ORU of the
# feed fails FHIR validation. The fix is the site configuration without the override.
BROKEN_SITE = """
[[feeds.{feed}.field_overrides]]
resource = "DiagnosticReport"
element = "issued"
source = "OBR-4"
"""


def _adt(control_id: str, mrn: str) -> bytes:
    return "\r".join([
        f"MSH|^~\\&|ADT|HOSP|EHR|HOSP|20260301090000+0100||ADT^A04^ADT_A01|{control_id}|P|2.5.1",
        "EVN|A04|20260301090000+0100",
        f"PID|1||{mrn}^^^HOSP^MR||Doe^Jane^Q||19800102|F",
    ]).encode() + b"\r"


def fhirbus(*argv: str) -> tuple[int, str, str]:
    """The real CLI entry point, in process (settings from the environment)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


@dataclass
class DlqOutcome:
    tag: str
    first_pass: int  # records the broken canonicalizer handled
    listed: list[dict[str, Any]]
    list_text: str
    replays: list[tuple[int, str]]  # (exit code, stdout) of the first and second replay
    after_fix: list[int]  # records handled after the first and after the second replay
    events: dict[str, list[CanonicalEvent]]
    chart: dict[str, Any]


def run_dlq_flow(settings: Settings, tag: str, tmp: Path, make_topic: Callable[[str], None],
                 idle_s: float = 5) -> DlqOutcome:
    raw_topic, feed, mrn = f"flow-raw-{tag}", f"lab-{tag}", f"MRN{tag}"
    make_topic(raw_topic)
    producer = Producer(producer_config(settings))
    for control_id, raw in (("R1", oru(f"R1{tag}", mrn, "P", "5.4")),
                            ("R2", oru(f"R2{tag}", mrn, "F", "5.6")),
                            ("A1", _adt(f"A1{tag}", mrn))):
        producer.send(raw_topic, raw, key=feed, headers=[("hl7.msh10", control_id.encode())])
    assert producer.flush(30) == 0
    producer.close()

    def canonicalize(site: SiteConfig, expect: int | None) -> int:
        return canonicalizer.run(settings, site, topics=[raw_topic], group_id=f"canon-{tag}",
                                 max_records=expect, idle_exit_s=idle_s, install_signals=False)

    site_file = tmp / f"site-{tag}.toml"
    site_file.write_text(BROKEN_SITE.format(feed=feed))
    first = canonicalize(load_site_config(site_file), 3)
    code, listing, err = fhirbus("dlq", "list", "--json", "--original-topic", raw_topic)
    assert code == 0, err
    listed = [orjson.loads(line) for line in listing.splitlines()]
    replay = ("dlq", "replay", "--topic", DLQ, "--message-type", "ORU",
              "--original-topic", raw_topic, "--actor", "flow-test")
    replays, after = [], []
    for _ in range(2):
        code, out, _ = fhirbus(*replay)
        replays.append((code, out))
        after.append(canonicalize(SiteConfig(), None))
    serde = EnvelopeSerde(registry_client(resolve_registry_url(settings)))
    bootstrap = resolve_bootstrap(settings)
    events = {rtype: [e for m in read_all(bootstrap, canonical_topic(rtype), 10**6, timeout_s=1)
                      if (e := serde.deserialize(m.value(), canonical_topic(rtype))).source.feed
                      == feed]
              for rtype in ("Patient", "Observation", "DiagnosticReport")}
    dsn = f"sqlite://{tmp / f'ehr-dlq-{tag}.sqlite'}"
    ehr = settings.model_copy(update={
        "projections": settings.projections.model_copy(update={"dsn": dsn})})
    projections.run("ehr", ehr, group=f"ehr-dlq-{tag}", idle_exit_s=idle_s,
                    install_signals=False)
    patient = events["Observation"][0].key if events["Observation"] else ""
    store = open_store(dsn)
    try:
        chart = queries.patient_chart(store, patient)
    finally:
        store.close()
    return DlqOutcome(tag, first, listed, listing, replays, after, events, chart)


def assert_dlq_outcome(out: DlqOutcome) -> None:
    # The bug: both ORUs dead-lettered with the reason, the ADT mapped; listed without PHI.
    assert out.first_pass == 3
    assert sorted(r["message_type"] for r in out.listed) == ["ORU^R01", "ORU^R01"]
    assert all(r["reason"].startswith("reason=invalid_fhir_resource path=DiagnosticReport")
               for r in out.listed), out.listed
    assert f"MRN{out.tag}" not in out.list_text and "Doe" not in out.list_text
    # The fix: replay sends exactly the two back, once; the second replay skips them.
    (code1, first), (code2, second) = out.replays
    assert code1 == 0 and "2 replayed, 0 already replayed" in first, first
    assert code2 == 0 and "0 replayed, 2 already replayed" in second, second
    assert out.after_fix == [2, 0]
    reports, observations = out.events["DiagnosticReport"], out.events["Observation"]
    assert sorted(e.source.message_control_id or "" for e in reports) == [
        f"R1{out.tag}", f"R2{out.tag}"]
    assert len(observations) == 2 and len({e.resource_id for e in observations}) == 1
    assert len({e.event_id for e in reports + observations}) == 4  # no duplicates
    # The EHR read model: the patient's chart holds the (final) result the replay delivered.
    chart = out.chart
    assert chart["patient"] is not None
    results = {r["id"]: r for r in chart["results"]}
    final = max(observations, key=lambda e: e.resource_version)
    assert (results[final.resource_id]["status"], results[final.resource_id]["version"]) == (
        "final", final.resource_version)
