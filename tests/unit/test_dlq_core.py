"""The dead-letter toolset's pure core: header decoding, filters, PHI-safe reasons and
masking, replay planning, purge cut-offs and the audit store."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhirbus.consumers.canonicalizer.errors import (
    InvalidFhirResource,
    MissingRequiredField,
    UnsupportedMessageType,
)
from fhirbus.consumers.deadletter import dead_letter
from fhirbus.consumers.records import Record
from fhirbus.reconciliation.dlq import decode
from fhirbus.reconciliation.dlq.audit import Action, AuditStore, Replayed
from fhirbus.reconciliation.dlq.filters import (
    DlqFilter,
    FilterError,
    parse_id,
    parse_time,
    resolve_topic,
)
from fhirbus.reconciliation.dlq.ops import (
    ClaimCheckError,
    delete_claim_checks,
    plan_replay,
    select,
    truncation_cutoffs,
    with_claim_check,
)
from fhirbus.reconciliation.dlq.records import DeadLetter, safe_reason

DLQ = "dlq.canonicalizer.v1"
ORU = (b"MSH|^~\\&|LIS|LAB|EHR|HOSP|20260301101500+0100||ORU^R01^ORU_R01|M1|P|2.5.1\r"
       b"PID|1||MRN123^^^HOSP^MR||Doe^Jane^Q||19800102|F\r"
       b"OBX|1|NM|2093-3^Cholesterol^LN||5.4|mmol/L\r")
PHI = ("Doe", "Jane", "MRN123", "19800102", "5.4")


def dead(value: bytes | None, error: Exception, offset: int = 0, *,
         headers: list[tuple[str, bytes]] | None = None, topic: str = "hl7.raw.v1",
         failed: datetime | None = None) -> DeadLetter:
    """A DLQ record exactly as the runtime builds it (consumers/deadletter.py)."""
    original = Record.detached(topic, 1, 40 + offset, value, b"lab",
                               headers if headers is not None else
                               [("hl7.msh9", b"ORU^R01^ORU_R01"), ("hl7.msh10", b"M1"),
                                ("fhirbus.listener_id", b"mllp-1")], 1_700_000_000_000)
    pub = dead_letter(original, topic=DLQ, stage="canonicalizer", group="fhirbus-canonicalizer",
                      error=error, error_class="permanent", attempts=1,
                      first_failed_at=datetime(2026, 3, 1, tzinfo=UTC), trace_id=None)
    out = DeadLetter(DLQ, 0, offset, 0, pub.key, pub.value, list(pub.headers))
    if failed is not None:
        out.headers[:] = [(k, v) for k, v in out.headers if k != "dlq.failed_at"]
        out.headers.append(("dlq.failed_at", failed.isoformat().encode()))
    return out


def test_headers_decode_into_the_error_context_and_origin() -> None:
    record = dead(ORU, InvalidFhirResource("DiagnosticReport.issued", "datetime_parsing"))
    assert (record.stage, record.consumer_group, record.error_class) == (
        "canonicalizer", "fhirbus-canonicalizer", "permanent")
    assert record.error_type == "InvalidFhirResource"
    assert record.original_topic == "hl7.raw.v1" and record.original_position == (1, 40)
    assert record.message_type == "ORU^R01" and record.source_system == "LIS/LAB"
    assert record.reason == ("reason=invalid_fhir_resource path=DiagnosticReport.issued "
                             "detail=datetime_parsing")
    assert record.default_target == "hl7.raw.v1"


def test_message_type_and_source_come_from_the_bytes_when_headers_lack_them() -> None:
    record = dead(ORU.replace(b"|", b"#").replace(b"MSH#^~\\&", b"MSH#^~\\&"),
                  UnsupportedMessageType("MSH-9", "X"), headers=[])
    assert record.message_type == "ORU^R01" and record.source_system == "LIS/LAB"
    cdc = dead(b'{"op":"c"}', ValueError("x"), headers=[("cdc.source", b"labbilling")],
               topic="cdc.labbilling.labbilling.lab_results")
    assert cdc.message_type == "labbilling.lab_results" and cdc.source_system == "labbilling"
    canonical = dead(b"\x00\x00\x00\x00\x01xx", ValueError("x"),
                     headers=[("fhirbus.event_type", b"observation.final")], topic="fhir.x.v1")
    assert canonical.message_type == "observation.final"


def test_replay_headers_drop_dlq_context_and_say_what_they_replay() -> None:
    record = dead(ORU, MissingRequiredField("PID-3"), offset=7)
    replayed = dict(record.replay_headers("r-1"))
    assert not any(k.startswith("dlq.") for k in replayed)
    assert replayed["replay-of"] == f"{DLQ}:0:7".encode() and replayed["replay-id"] == b"r-1"
    assert replayed["hl7.msh10"] == b"M1"
    again = DeadLetter(DLQ, 0, 9, 0, None, ORU, [*record.replay_headers("r-1"),
                                                  ("dlq.stage", b"canonicalizer")])
    assert [k for k, _ in again.replay_headers("r-2")].count("replay-of") == 1


@pytest.mark.parametrize("message", [
    "KeyError: 'Doe^Jane'",
    "could not insert patient MRN123",
    "reason=x path=PID-5 detail=Doe^Jane|19800102",
])
def test_messages_not_in_the_safe_form_are_withheld(message: str) -> None:
    reason = safe_reason("KeyError", message)
    assert reason.startswith("KeyError (message withheld")
    assert not any(p in reason for p in PHI)


@given(st.text(max_size=80))
def test_safe_reason_only_ever_shows_the_fixed_form(message: str) -> None:
    reason = safe_reason("E", message)
    assert (reason == message and reason.startswith("reason=")) or "withheld" in reason


def test_listener_rejects_have_a_reason_code_and_no_replay_target() -> None:
    reject = DeadLetter("hl7.rejected.v1", 0, 3, 1_700_000_000_000, b"lab", b"junk", [
        ("fhirbus.listener_id", b"mllp-1"), ("fhirbus.reject_reason", b"no_msh"),
        ("fhirbus.reject_code", b"AR"), ("fhirbus.error_detail", b"segment Doe")])
    assert (reject.stage, reject.error_class, reject.error_type) == ("hl7-listener",
                                                                     "rejected", "AR")
    assert reject.reason == "rejected reason=no_msh" and reject.default_target is None
    plan = plan_replay([reject], set(), None, False)
    assert plan.no_target == [reject] and plan.send == []
    assert plan_replay([reject], set(), "hl7.raw.v1", False).send == [(reject, "hl7.raw.v1")]


def test_filters_combine_and_match_prefixes_of_message_types() -> None:
    now = datetime(2026, 3, 2, tzinfo=UTC)
    old = dead(ORU, MissingRequiredField("PID-3"), 0, failed=now - timedelta(days=3))
    new = dead(ORU, MissingRequiredField("PID-3"), 1, failed=now - timedelta(hours=1))
    adt = dead(ORU.replace(b"ORU^R01^ORU_R01", b"ADT^A01"), MissingRequiredField("PID-3"), 2,
               headers=[], failed=now)
    records = [old, new, adt]
    assert select(records, DlqFilter(message_type="ORU"), set()) == [old, new]
    assert select(records, DlqFilter(message_type="ORU_R01"), set()) == [old, new]
    assert select(records, DlqFilter(message_type="ADT^A01"), set()) == [adt]
    since = parse_time("2d", "--since", now=now)
    assert select(records, DlqFilter(since=since), set()) == [new, adt]
    assert select(records, DlqFilter(until=since), set()) == [old]
    assert select(records, DlqFilter(source_system="lis"), set()) == records
    assert select(records, DlqFilter(source_system="LIS/OTHER"), set()) == []
    assert select(records, DlqFilter(error_type="InvalidFhirResource"), set()) == []
    assert select(records, DlqFilter(ids=frozenset({(DLQ, 0, 1)})), set()) == [new]
    assert select(records, DlqFilter(), {(0, 1)}) == [old, adt]
    assert select(records, DlqFilter(), {(0, 1)}, include_purged=True) == records


@given(st.integers(0, 999_999), st.integers(0, 2**62))
def test_ids_parse_with_and_without_the_topic(partition: int, offset: int) -> None:
    assert parse_id(f"{partition}:{offset}", DLQ) == (DLQ, partition, offset)
    assert parse_id(f"{DLQ}:{partition}:{offset}", DLQ) == (DLQ, partition, offset)


@given(st.text(max_size=30).filter(lambda s: ":" not in s or not s.replace(":", "").isdigit()))
def test_bad_ids_are_refused_with_the_expected_form(text: str) -> None:
    try:
        parse_id(text, DLQ)
    except FilterError as exc:
        assert "PARTITION:OFFSET" in str(exc) or "--topic" in str(exc)


def test_an_id_for_another_topic_says_which_topic_to_read() -> None:
    with pytest.raises(FilterError, match=r"--topic dlq\.reconciler\.v1"):
        parse_id("dlq.reconciler.v1:0:3", DLQ)


@given(st.datetimes(timezones=st.just(UTC)))
def test_iso_times_round_trip(when: datetime) -> None:
    assert parse_time(when.isoformat(), "--since") == when


@given(st.integers(0, 99_999), st.sampled_from("smhdw"))
def test_relative_ages_are_before_now(amount: int, unit: str) -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_time(f"{amount}{unit}", "--since", now=now) <= now


@pytest.mark.parametrize("text", ["yesterday", "2h ago", "-5m", ""])
def test_bad_times_name_the_option_and_the_form(text: str) -> None:
    with pytest.raises(FilterError, match="--until: expected an ISO-8601"):
        parse_time(text, "--until")


def test_stage_names_resolve_to_their_topics() -> None:
    assert resolve_topic("canonicalizer") == DLQ
    assert resolve_topic("hl7-listener") == "hl7.rejected.v1"
    assert resolve_topic("dlq.projection-ehr.v1") == "dlq.projection-ehr.v1"


def test_show_masks_every_patient_value_unless_asked() -> None:
    record = dead(ORU, KeyError("Doe^Jane"))
    shown = decode.show(record, show_phi=False)
    text = orjson.dumps(shown).decode() + decode.render(shown)
    assert not any(p in text for p in PHI)
    pid = next(s for s in shown["original"]["value"]["segments"] if s["segment"] == "PID")
    assert pid["fields"]["PID-3"] == "***^^^***^***" and pid["fields"]["PID-5"] == "***^***^***"
    msh = shown["original"]["value"]["segments"][0]["fields"]
    assert msh["MSH-3"] == "LIS" and msh["MSH-9"] == "ORU^R01^ORU_R01"
    assert shown["error"]["reason"].startswith("KeyError (message withheld")
    assert shown["original"]["key"] == "lab"  # a listener record's key is its feed id
    revealed = decode.render(decode.show(record, show_phi=True))
    assert "Doe^Jane^Q" in revealed and "error_message: 'Doe^Jane'" in revealed


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="|^~\\&\r\n",
                                                     blacklist_categories=("Cs",)),
                        min_size=1, max_size=12), min_size=1, max_size=6))
def test_masked_hl7_never_contains_a_value(values: list[str]) -> None:
    raw = ("MSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5\rPID|" + "|".join(values)).encode()
    fields = decode.hl7_structure(raw, show_phi=False)[1]["fields"]
    assert all(set(v) <= set("*^~&\\") for v in fields.values())


def test_cdc_json_keeps_keys_and_position_but_masks_row_values() -> None:
    doc = {"op": "u", "source": {"lsn": 42, "table": "patients"},
           "before": {"name": "Doe", "id": 7}, "after": {"name": "Doe", "id": 7, "ok": True}}
    masked = decode.mask_json(doc)
    assert masked["op"] == "u" and masked["source"] == {"lsn": 42, "table": "patients"}
    assert masked["after"] == {"name": "***", "id": "***", "ok": True}
    record = dead(orjson.dumps(doc), ValueError("bad"), headers=[("cdc.source", b"lb")],
                  topic="cdc.lb.public.patients")
    shown = decode.show(record, show_phi=False)
    assert shown["original"]["key"] == "***" and "Doe" not in orjson.dumps(shown).decode()


def test_truncation_stops_at_the_first_record_still_wanted() -> None:
    records = [DeadLetter(DLQ, p, o, 0, None, b"x") for p in (0, 1) for o in range(4)]
    gone = {(0, 0), (0, 1), (0, 3), (1, 1)}
    assert truncation_cutoffs(records, gone) == {0: 2}


def test_audit_store_remembers_replays_and_purges(tmp_path: Path) -> None:
    with AuditStore(tmp_path / "a" / "audit.sqlite") as store:
        action = Action("r1", "replay", "alice", DLQ, {"message_type": "ORU"}, None, 2, 2, 0)
        store.record_replay(action, [Replayed(0, 1, "hl7.raw.v1", 2, 10),
                                     Replayed(0, 2, "hl7.raw.v1", 2, 11)])
        store.record_purge(Action("p1", "purge", "bob", DLQ, {}, None, 1, 1, 0), [(0, 5)])
        assert store.replayed(DLQ) == {(0, 1), (0, 2)} and store.purged(DLQ) == {(0, 5)}
        assert store.replayed("dlq.other.v1") == set()
    with AuditStore(tmp_path / "a" / "audit.sqlite") as store:  # durable across opens
        actions = store.actions(DLQ)
        assert {(a.action, a.actor) for a in actions} == {("replay", "alice"), ("purge", "bob")}
        assert next(a for a in actions if a.action == "replay").filter == {"message_type": "ORU"}
        assert [r.target_offset for r in store.replays_of("r1")] == [10, 11]
    plan = plan_replay([DeadLetter(DLQ, 0, 1, 0, None, b"x", [("dlq.original_topic", b"t")])],
                       {(0, 1)}, None, force=False)
    assert len(plan.already) == 1 and plan.send == []


def oversize_reject(tmp_path: Path, full: bytes, digest: str | None = None) -> DeadLetter:
    path = tmp_path / "mllp-1-20260101T000000.000000Z-abc.bin"
    path.write_bytes(full)
    return DeadLetter("hl7.rejected.v1", 0, 4, 0, b"lab", full[:20], [
        ("fhirbus.listener_id", b"mllp-1"), ("fhirbus.reject_reason", b"too_large"),
        ("fhirbus.reject_code", b"AE"), ("fhirbus.size", str(len(full)).encode()),
        ("fhirbus.claim_check", str(path).encode()),
        ("fhirbus.claim_check_sha256", (digest or hashlib.sha256(full).hexdigest()).encode()),
    ])


def test_show_names_the_claim_check_of_an_oversize_reject(tmp_path: Path) -> None:
    full = b"MSH|^~\\&|LIS|LAB|C|D|2026||ORU^R01|9|P|2.5\rPID|1||Doe^Jane" + b"x" * 100
    record = oversize_reject(tmp_path, full)
    shown = decode.show(record, show_phi=False)
    assert shown["original"]["claim_check"]["path"] == record.claim_check
    assert shown["original"]["claim_check"]["present"] is True
    text = decode.render(shown)
    assert f"claim check: {record.claim_check}" in text and "Doe" not in text
    assert decode.show(dead(ORU, KeyError("x")), show_phi=False)["original"]["claim_check"] is None


def test_replay_sends_the_claim_check_bytes_or_nothing(tmp_path: Path) -> None:
    full = b"MSH|^~\\&|LIS|LAB|C|D|2026||ORU^R01|9|P|2.5\rOBX|1|ED|" + b"y" * 100
    assert with_claim_check(oversize_reject(tmp_path, full)).value == full
    plain = dead(ORU, KeyError("x"))
    assert with_claim_check(plain) is plain
    with pytest.raises(ClaimCheckError, match="does not match"):
        with_claim_check(oversize_reject(tmp_path, full, digest="0" * 64))
    gone = oversize_reject(tmp_path, full)
    Path(gone.claim_check or "").unlink()
    with pytest.raises(ClaimCheckError, match="cannot be read"):
        with_claim_check(gone)


def test_replay_refuses_a_reject_whose_bytes_were_cut(tmp_path: Path) -> None:
    # Over the claim-check cap, or with no file: the kept bytes are a cut message, and a
    # replay must not publish it as if whole (regression: the head was sent as the message).
    full = b"MSH|^~\\&|LIS|LAB|C|D|2026||ORU^R01|9|P|2.5\rOBX|1|ED|" + b"z" * 100
    capped = oversize_reject(tmp_path, full[:64])
    cut = replace(capped, headers=[*capped.headers, ("fhirbus.truncated", b"true")])
    with pytest.raises(ClaimCheckError, match="cannot be replayed whole"):
        with_claim_check(cut)
    head_only = replace(dead(ORU, KeyError("x")), headers=[("fhirbus.truncated", b"true")])
    with pytest.raises(ClaimCheckError, match="cannot be replayed whole"):
        with_claim_check(head_only)


def test_deleting_purged_records_deletes_their_claim_check_files(tmp_path: Path) -> None:
    kept = oversize_reject(tmp_path, b"MSH|^~\\&|A|B|C|D|2026||ORU^R01|1|P|2.5\r" + b"q" * 50)
    path = Path(kept.claim_check or "")
    assert path.is_file()
    assert delete_claim_checks([kept, dead(ORU, KeyError("x"))]) == (1, [])
    assert not path.exists()
    deleted, notes = delete_claim_checks([kept])  # already gone: said, not an error
    assert deleted == 0 and "not on this host" in notes[0]
