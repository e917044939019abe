"""Every corpus message either becomes canonical events whose resources validate, or is
dead-lettered with a listed reason; named message families never for lack of a mapping.

Prints outcome counts per message type and HL7 version.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
from fhir.resources.R4B import get_fhir_model_class

from fhirbus.consumers.canonicalizer import (
    DEAD_LETTER_REASONS,
    MappingError,
    RawRef,
    SiteConfig,
    map_message,
)
from fhirbus.hl7 import HL7ParseError, parse_bytes, split_batch

REF = RawRef("hl7.raw.v1", 0, 0, "corpus", datetime(2026, 1, 1, tzinfo=UTC))
NAMED = {
    "ADT": {"A01", "A02", "A03", "A04", "A05", "A06", "A07", "A08", "A11", "A12", "A13",
            "A28", "A31", "A34", "A39", "A40"},
    "ORU": {"R01"}, "ORM": {"O01"}, "OML": {"O21"}, "DFT": {"P03"},
    "SIU": {"S12", "S13", "S14", "S15"}, "VXU": {"V04"}, "MDM": {"T02"},
}
# The corpus's dead letters, pinned: a change here is a behaviour change to review.
EXPECTED_DEAD = {
    "adt/efferent-ADT_A04-v2.7.hl7": "missing_required_segment",  # MSH + EVN only
    "adt/efferent-ADT_A08-ZZ1-SkipInvalidEscapeSequenceTest.hl7": "missing_required_segment",
    "adt/efferent-Sample-ADT.hl7": "unsupported_message_type",  # ADT^O01, non-standard
    "adt/rethink-edge-empty-segments.hl7": "missing_required_field",  # PID-3 empty
    "batch/ruby-empty-batch.hl7": "empty_batch",
    "invalid/nhc-catalyze-io-orm-example.hl7": "parse_error",
    "invalid/nhc-healthcare-it-systems-adt-example.hl7": "missing_required_segment",
    "invalid/pyhl7-sample_bad_batch.hl7": "parse_error",
    "invalid/rethink-invalid-missing-msh.hl7": "parse_error",
    "invalid/rethink-invalid-segment-header-length.hl7": "parse_error",
    "invalid/ruby-empty_segments.hl7": "parse_error",
    "oru/efferent-ORU_R01-SequenceNo.hl7": "missing_required_field",  # no patient id at all
    "oru/ruby-test.hl7": "unsupported_message_type",  # ORU^R03 (display-oriented)
    "other/efferent-ACK-DoubleEncoding.hl7": "unsupported_message_type",
    "other/hl7apy-RSP_K22-v2.5.hl7": "unsupported_message_type",
    "other/hl7apy-RSP_K22-v2.7-truncation-char.hl7": "unsupported_message_type",
    "other/msft-PC1-Problem-Add-v2.3.1.hl7": "unsupported_message_type",
    "other/nhc-health-standards-bar-example.hl7": "unsupported_message_type",
    "other/nhc-mirthproject-mfn-example.hl7": "unsupported_message_type",
    "other/ruby-rqi_r04.hl7": "unsupported_message_type",
}


def _messages(raw: bytes) -> list[bytes]:
    try:
        return split_batch(raw) or [raw]
    except HL7ParseError:
        return [raw]


def _label(raw: bytes) -> tuple[str, str, str]:
    try:
        msg = parse_bytes(raw)
    except (HL7ParseError, ValueError):
        return ("(unparseable)", "?", "?")
    return (msg.get("MSH-9.1") or "?", msg.trigger or "-", msg.version or "?")


def test_every_corpus_message_maps_or_is_dead_lettered_with_a_listed_reason(
    corpus_dir: Path,
) -> None:
    outcomes: Counter[tuple[str, str, str, str]] = Counter()
    resources: Counter[str] = Counter()
    dead: dict[str, str] = {}
    for path in sorted((corpus_dir / "hl7v2").rglob("*.hl7")):
        name = str(path.relative_to(corpus_dir / "hl7v2"))
        for raw in _messages(path.read_bytes()):
            code, trigger, version = _label(raw)
            try:
                events = map_message(raw, REF, SiteConfig())
            except MappingError as exc:
                assert exc.reason in DEAD_LETTER_REASONS
                if code in NAMED and trigger in NAMED[code]:
                    assert exc.reason != "unsupported_message_type", name
                dead[name] = exc.reason
                outcomes[(f"{code}^{trigger}", version, f"dead:{exc.reason}", "")] += 1
                continue
            for event in events:  # what is published validates, re-read from its bytes
                get_fhir_model_class(event.resource_type).model_validate(
                    orjson.loads(event.resource))
                resources[event.resource_type] += 1
            outcomes[(f"{code}^{trigger}", version, "mapped", "")] += 1
    print("\nmessage type   version  outcome                              count")
    for (mtype, version, outcome, _), count in sorted(outcomes.items()):
        print(f"{mtype:14} {version:8} {outcome:36} {count}")
    mapped = sum(c for k, c in outcomes.items() if k[2] == "mapped")
    print(f"mapped {mapped}, dead-lettered {sum(outcomes.values()) - mapped}; resources: "
          + ", ".join(f"{k}={v}" for k, v in sorted(resources.items())))
    assert dead == EXPECTED_DEAD
