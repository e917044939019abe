"""Classification and records, on the shared corpus: what gets AA, AR or AE, and why."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from fhirbus.hl7 import split_batch
from fhirbus.producers.mllp import framing
from fhirbus.producers.mllp.intake import (
    Origin,
    Policy,
    classify,
    dedup_key,
    raw_record,
    rejected_record,
)
from fhirbus.settings import Hl7ListenerSettings

POLICY = Policy(frozenset(Hl7ListenerSettings().supported_versions))
ORIGIN = Origin("mllp-t", "feed-t", "10.0.0.1:5000", datetime(2024, 1, 1, tzinfo=UTC))

# invalid/ file -> (ACK code, reason). The one AA is valid HL7 that a linter flags.
INVALID_OUTCOMES = {
    "nhc-catalyze-io-orm-example.hl7": ("AR", "bad_segment_id"),  # wrapped line -> "8866|"
    "nhc-healthcare-it-systems-adt-example.hl7": ("AR", "msh_only"),  # no terminators
    "pyhl7-sample_bad_batch.hl7": ("AR", "no_msh"),
    "rethink-invalid-missing-msh.hl7": ("AR", "no_msh"),
    "rethink-invalid-segment-header-length.hl7": ("AR", "bad_segment_id"),
    "rethink-invalid-trailing-empty-fields.hl7": ("AA", None),  # legal HL7; later stages judge
    "rethink-invalid-wrong-version.hl7": ("AE", "unsupported_version"),
    "ruby-empty_segments.hl7": ("AR", "bad_segment_id"),
}
# Every corpus message outside invalid/ is valid HL7 the listener must accept.


def frame(raw: bytes) -> framing.Frame:
    return framing.Frame(raw, None, len(raw))


def test_invalid_corpus_outcomes(corpus_dir: Path) -> None:
    files = sorted((corpus_dir / "hl7v2" / "invalid").glob("*.hl7"))
    assert {f.name for f in files} == set(INVALID_OUTCOMES)
    for path in files:
        verdict = classify(frame(path.read_bytes()), POLICY)
        assert (verdict.code, verdict.reason) == INVALID_OUTCOMES[path.name], path.name
        if verdict.reason:
            assert verdict.error is not None and verdict.error.text


def test_every_other_corpus_message_is_accepted(corpus_dir: Path) -> None:
    seen = 0
    for path in sorted((corpus_dir / "hl7v2").rglob("*.hl7")):
        if path.parent.name == "invalid":
            continue
        for raw in split_batch(path.read_bytes()):
            verdict = classify(frame(raw), POLICY)
            assert verdict.accepted, (path.name, verdict.reason)
            assert verdict.header is not None and verdict.code == "AA"
            seen += 1
    assert seen >= 80


def test_doubled_escape_character_in_msh2_is_accepted_with_its_control_id(
    corpus_dir: Path,
) -> None:
    # lfh-sample_*: MSH-2 is '^~\\&' (a doubled backslash). The parser reads it as one
    # (test_hl7_parser.py), so they are accepted, not AR bad_encoding_characters, and the
    # header the ACK is built from still has their MSH-10 for MSA-2.
    for name in ("lfh-sample_unix.hl7", "lfh-sample_win.hl7"):
        raw = (corpus_dir / "hl7v2" / "adt" / name).read_bytes()
        verdict = classify(frame(raw), POLICY)
        assert (verdict.code, verdict.reason, verdict.msh9) == ("AA", None, "ADT^A01"), name
        assert verdict.header is not None and verdict.header.control_id == "102", name


MSG = b"MSH|^~\\&|APP|FAC|RCV|RFAC|20240101||ADT^A01^ADT_A01|C1|P|%s%s\rPID|1||123||DOE^JANE\r"


def msg(version: bytes = b"2.5", tail: bytes = b"") -> bytes:
    return MSG % (version, tail)


@pytest.mark.parametrize(
    ("version", "accepted"),
    [
        (b"2.5", True),
        (b"2.6.1", True),
        (b"", True),
        (b"1.0", False),
        (b"3.0", False),
        (b"2.9", False),
        (b"2.5x", False),
    ],
)
def test_version_policy(version: bytes, accepted: bool) -> None:
    verdict = classify(frame(msg(version)), POLICY)
    assert verdict.accepted is accepted
    if not accepted:
        assert (verdict.code, verdict.reason) == ("AE", "unsupported_version")


def test_charsets() -> None:
    latin = msg(b"2.5", b"||||||8859/1").replace(b"DOE", b"D\xd6E")
    verdict = classify(frame(latin), POLICY)
    assert verdict.accepted and verdict.codec == "latin-1"
    utf8 = msg(b"2.5", b"||||||UNICODE UTF-8").replace(b"DOE", "DÖE".encode())
    assert classify(frame(utf8), POLICY).codec == "utf-8"
    assert classify(frame(msg(b"2.5", b"||||||ASCII")), POLICY).codec == "ascii"
    odd = classify(frame(msg(b"2.5", b"||||||ISO IR87")), POLICY)
    assert (odd.code, odd.reason) == ("AE", "unsupported_charset")
    assert odd.header is not None and odd.header.control_id == "C1"  # still echoed
    bad = classify(frame(msg(b"2.5", b"||||||UNICODE UTF-8").replace(b"DOE", b"\xff\xfe")), POLICY)
    assert (bad.code, bad.reason) == ("AE", "bad_charset_bytes")


def test_segment_terminators_are_all_accepted() -> None:
    for term in (b"\r", b"\n", b"\r\n"):
        verdict = classify(frame(msg().replace(b"\r", term)), POLICY)
        assert verdict.accepted, term


def test_structural_rejections_are_ar() -> None:
    cases = {
        b"": "empty",
        b"hello world": "no_msh",
        b"MSH|^~|A\rPID|1": "bad_encoding_characters",
        b"MSH|^~\\&|A|B|||||ADT^A01|1|P|2.5": "msh_only",
        msg() + b"pid|2\r": "bad_segment_id",
    }
    for raw, reason in cases.items():
        verdict = classify(frame(raw), POLICY)
        assert (verdict.code, verdict.reason) == ("AR", reason), raw


def test_framing_errors() -> None:
    too_big = classify(framing.Frame(msg()[:40], framing.TOO_LARGE, 10**7), POLICY)
    assert (too_big.code, too_big.reason) == ("AE", "too_large")
    assert too_big.header is not None and too_big.header.sending_app == "APP"
    cut = classify(framing.Frame(b"MSH|^~", framing.TRUNCATED, 6), POLICY)
    assert (cut.code, cut.reason) == ("AR", "truncated_frame")
    outside = classify(framing.Frame(b"junk", framing.MISSING_START_BLOCK, 4), POLICY)
    assert (outside.code, outside.reason, outside.header) == ("AR", "missing_start_block", None)


def test_missing_message_type_is_ae() -> None:
    raw = msg().replace(b"ADT^A01^ADT_A01", b"")
    assert classify(frame(raw), POLICY).reason == "missing_message_type"


def test_dedup_key() -> None:
    header = classify(frame(msg()), POLICY).header
    assert header is not None
    key = dedup_key(header, msg())
    assert key == dedup_key(header, msg()) and key is not None
    assert dedup_key(header, msg() + b"OBX|1\r") != key  # same control id, other content
    no_id = classify(frame(msg().replace(b"|C1|", b"||")), POLICY).header
    assert no_id is not None and dedup_key(no_id, msg()) is None


def test_raw_record_is_byte_exact_with_headers() -> None:
    raw = msg(b"2.5", b"||||||8859/1").replace(b"\r", b"\r\n")
    verdict = classify(frame(raw), POLICY)
    record = raw_record("hl7.raw.v1", frame(raw), verdict, ORIGIN, [("traceparent", b"00-x")])
    assert record.value == raw and record.key == b"feed-t"
    headers = dict(record.headers)
    assert headers["hl7.msh9"] == b"ADT^A01^ADT_A01"
    assert headers["hl7.msh10"] == b"C1" and headers["hl7.msh12"] == b"2.5"
    assert headers["hl7.charset"] == b"latin-1"
    assert headers["fhirbus.peer"] == b"10.0.0.1:5000"
    assert headers["fhirbus.listener_id"] == b"mllp-t"
    assert headers["fhirbus.received_at"].startswith(b"2024-01-01T00:00:00.000")
    assert headers["traceparent"] == b"00-x"


def test_rejected_record_has_reason_and_no_field_values() -> None:
    raw = msg(b"1.0")
    verdict = classify(frame(raw), POLICY)
    record = rejected_record("hl7.rejected.v1", frame(raw), verdict, ORIGIN)
    headers = dict(record.headers)
    assert record.value == raw
    assert headers["fhirbus.reject_reason"] == b"unsupported_version"
    assert headers["fhirbus.reject_code"] == b"AE"
    detail = headers["fhirbus.error_detail"]
    assert detail and b"DOE" not in detail and b"JANE" not in detail and b"1.0" not in detail
