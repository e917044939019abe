"""``fhirbus replay raw`` after a mapping change: only resources whose content changed get
a new version; everything else is not republished."""

from __future__ import annotations

import pytest

from fhirbus.consumers.canonicalizer import SiteConfig, app, context, replay
from fhirbus.consumers.canonicalizer.site import parse_site_config
from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.kafka.config import resolve_registry_url
from fhirbus.schemas.serde import EnvelopeSerde, registry_client
from fhirbus.settings import Settings
from tests.integration.test_canonicalizer import events_for, produce


def lab_oru(control_id: str, mrn: str) -> bytes:
    return "\r".join([
        f"MSH|^~\\&|LIS|LAB|EHR|HOSP|20260302101500+0100||ORU^R01|{control_id}|P|2.5.1",
        f"PID|1||{mrn}^^^HOSP^MR||Doe^Jane||19800102|F",
        f"OBR|1||F-{control_id}^LIS|PANEL^Chem panel^99LAB|||20260302080000+0100|||||||||||||||"
        "20260302101000+0100|||F",
        "OBX|1|NM|GLU^Glucose^99LAB||5.5|mmol/L||N|||F",
        "OBX|2|NM|NA^Sodium^99LAB||140|mmol/L||N|||F",
    ]).encode()


@pytest.mark.slow
def test_replay_after_a_mapping_change_versions_only_the_changed_resources(
    embedded_stack: EmbeddedStack, settings: Settings, unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw_topic, feed = f"raw-replay-{unique}", f"lab-{unique}"
    embedded_stack.create_topic(raw_topic, 1)
    produce(settings, raw_topic, feed, [(f"R{i}-{unique}", lab_oru(f"R{i}-{unique}",
                                                                   f"M{i}{unique}"))
                                        for i in range(2)])
    assert app.run(settings, SiteConfig(), topics=[raw_topic], group_id=f"c-{unique}",
                   max_records=2, idle_exit_s=15, install_signals=False) == 2
    serde = EnvelopeSerde(registry_client(resolve_registry_url(settings)))
    before = events_for(embedded_stack, serde, "Observation", feed, 4)
    assert len(before) == 4

    # Replaying with nothing changed publishes nothing.
    same = replay.replay_raw(settings, SiteConfig(), feed=feed,
                             start=replay.parse_position("0"), topic=raw_topic)
    assert (same.records, same.published, same.unchanged) == (2, 0, same.events)

    # The fix: a new mapping version that maps the lab's local glucose code to LOINC.
    monkeypatch.setattr(context, "MAPPING_VERSION", "hl7v2-fhir-1.0.1")
    fixed = parse_site_config({"feeds": {feed: {"code_maps": [{
        "source_system": "99LAB", "target_system": "http://loinc.org",
        "codes": {"GLU": {"code": "2345-7"}}}]}}})
    report = replay.replay_raw(settings, fixed, feed=feed, start=replay.parse_position("0"),
                               topic=raw_topic)
    print(report.summary())
    assert report.published == 2 and report.by_type == {"Observation": 2}
    assert report.unchanged == report.events - 2

    after = events_for(embedded_stack, serde, "Observation", feed, 6)
    new = [e for e in after if e.mapping_version == "hl7v2-fhir-1.0.1"]
    assert len(new) == 2 and all(b"2345-7" in e.resource for e in new)
    old_by_id = {e.resource_id: e for e in before}
    for event in new:
        old = old_by_id[event.resource_id]  # same resource, next version
        assert event.resource_version == old.resource_version + 1
        assert event.event_id != old.event_id and event.event_type == old.event_type

    # Replaying the fix again is a no-op: the new versions are now the latest.
    again = replay.replay_raw(settings, fixed, feed=feed, start=replay.parse_position("0"),
                              topic=raw_topic)
    assert again.published == 0
