"""Site customization: code maps, identifier systems, Z-segments, overrides, bad config."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from fhirbus.consumers.canonicalizer import RawRef, load_site_config, map_message
from fhirbus.consumers.canonicalizer.site import SiteConfigError, parse_site_config

REF = RawRef("hl7.raw.v1", 0, 1, "lab", datetime(2026, 1, 1, tzinfo=UTC))
RAW = "\r".join([
    "MSH|^~\\&|LIS|LAB|EHR|HOSP|20260301101500||ORU^R01|C9|P|2.5.1",
    "PID|1||777^^^LABMPI^MR||Doe^Jane||19800102|F",
    "ZPD|1|PHARM-42|Y",
    "OBR|1||F77|PANEL^Panel^99LAB|||20260301080000",
    "OBX|1|NM|GLU^Glucose^99LAB||5.5|mmol/L||N|||F",
]).encode()
REPO = Path(__file__).resolve().parents[2]


def resources(site_toml: dict) -> dict[str, dict]:
    events = map_message(RAW, REF, parse_site_config(site_toml))
    return {e.resource_type: orjson.loads(e.resource) for e in events}


def test_code_maps_add_the_standard_coding_and_keep_the_local_one() -> None:
    out = resources({"feeds": {"lab": {"code_systems": {"99LAB": "https://lab.example/codes"},
        "code_maps": [{"source_system": "99LAB", "target_system": "http://loinc.org",
                       "codes": {"GLU": {"code": "2345-7", "display": "Glucose"}}}]}}})
    assert out["Observation"]["code"]["coding"] == [
        {"system": "https://lab.example/codes", "code": "GLU", "display": "Glucose"},
        {"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"},
    ]


def test_identifier_systems_and_timezone_are_per_feed() -> None:
    out = resources({"feeds": {"lab": {"timezone": "America/Chicago",
                                       "identifier_systems": {"LABMPI": "https://h.example/mrn"}},
                               "other": {"timezone": "Asia/Tokyo"}}})
    assert out["Patient"]["identifier"][0]["system"] == "https://h.example/mrn"
    assert out["DiagnosticReport"]["effectiveDateTime"] == "2026-03-01T08:00:00-06:00"


def test_z_segment_rules_and_field_overrides() -> None:
    out = resources({"default": {
        "z_segments": [{"segment": "ZPD", "field": 2, "resource": "Patient",
                        "extension_url": "https://h.example/ext/pharmacy"},
                       {"segment": "ZPD", "field": 3, "resource": "Patient",
                        "value_type": "boolean", "extension_url": "https://h.example/ext/vip"}],
        "field_overrides": [{"resource": "Patient", "element": "language", "value": "de"},
                            {"resource": "Observation", "element": "status", "value": "final"},
                            {"resource": "Patient", "element": "gender", "source": "PID-8",
                             "only_if_absent": True}]}})
    assert out["Patient"]["extension"] == [
        {"url": "https://h.example/ext/pharmacy", "valueString": "PHARM-42"},
        {"url": "https://h.example/ext/vip", "valueBoolean": True},
    ]
    assert out["Patient"]["language"] == "de" and out["Patient"]["gender"] == "female"


@pytest.mark.parametrize(("toml", "key"), [
    ('[feeds.lab]\ntimezone = "Mars/Olympus"\n', "feeds.lab.timezone"),
    ('[default]\nidentifier_systems = { X = "not a uri" }\n', "default.identifier_systems"),
    ('[[default.z_segments]]\nsegment = "PID"\nfield = 1\nresource = "Patient"\n'
     'extension_url = "https://x.example/e"\n', "default.z_segments.0.segment"),
    ('[[feeds.lab.field_overrides]]\nresource = "Patient"\nelement = "id"\nvalue = "x"\n',
     "feeds.lab.field_overrides.0"),
    ('[feeds.lab]\ncolour = "blue"\n', "feeds.lab.colour"),
])
def test_bad_configuration_stops_with_the_key_named(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "site.toml"
    path.write_text(toml)
    with pytest.raises(SiteConfigError) as caught:
        load_site_config(path)
    assert key in str(caught.value)


def test_the_example_site_config_loads() -> None:
    site = load_site_config(REPO / "examples/site/lab.toml")
    assert site.for_feed("lab").code_maps
