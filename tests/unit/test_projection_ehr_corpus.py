"""EHR chart content for orders, immunizations, appointments and documents, from real corpus
messages (shared/corpus/hl7v2) mapped by the canonicalizer, on every backend: the row holds
the message's status, codes and dates under its patient; a later message about the same
resource replaces it, and an older one arriving after that is ignored.

The later and older messages are the corpus message with a few fields edited the way a
sending system would (order control, trigger, message time), so they keep its identifiers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhirbus.consumers.canonicalizer import load_site_config
from fhirbus.consumers.canonicalizer.context import RawRef
from fhirbus.consumers.canonicalizer.mapper import map_message
from fhirbus.projections import ehr, queries, testing
from fhirbus.projections.sink import ProjectionSink, prepare
from fhirbus.projections.store import Store
from fhirbus.schemas.envelope import CanonicalEvent

Edits = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class Case:
    path: str  # under shared/corpus/hl7v2
    resource_type: str
    table: str
    expected: dict[str, Any]  # chart row values of the corpus message itself
    later: Edits  # a newer message about the same resource
    later_expected: dict[str, Any]
    older: Edits  # a message older than the corpus one, delivered last


CASES = [
    Case(  # ORM^O01, ORC-1 NW: a lab order placed
        "orm/msft-LAB-ORM-1.hl7", "ServiceRequest", "orders",
        {"status": "active", "code": "24317-0",
         "display": "Hemogram and platelet count, automated",
         "authored_on": "2014-10-06T09:29:00Z"},
        ((b"ORC|NW|", b"ORC|CA|"), (b"201410060929", b"201410061015")),  # cancelled later
        {"status": "revoked", "code": "24317-0", "authored_on": "2014-10-06T10:15:00Z"},
        ((b"ORC|NW|", b"ORC|HD|"), (b"201410060929", b"201410060800")),  # on hold, before
    ),
    Case(  # VXU^V04 (CDC test case 1.1): one administered dose of CVX 140
        "vxu/msft-IZ_1_1.1_Admin_Child_Max_Message.hl7", "Immunization", "immunizations",
        {"status": "completed", "vaccine_code": "140",
         "display": "Influenza, seasonal, injectable, preservative free",
         "occurrence": "2012-08-14"},
        # RXA-21 U: the administration date corrected in a later message
        ((b"20120701082200+0700", b"20120815090000+0700"),
         (b"RXA|0|1|20120814|", b"RXA|0|1|20120815|"), (b"|CP|A", b"|CP|U")),
        {"status": "completed", "vaccine_code": "140", "occurrence": "2012-08-15"},
        # RXA-20 RE (refused), stated before the administration was recorded
        ((b"20120701082200+0700", b"20120630080000+0700"), (b"|CP|A", b"|RE|A")),
    ),
    Case(  # SIU^S12: an appointment booked
        "siu/rethink-siu-s12-schedule.hl7", "Appointment", "appointments",
        {"status": "booked", "start_at": "2026-03-25T14:00:00Z",
         "end_at": "2026-03-25T14:30:00Z"},
        ((b"SIU^S12^SIU_S12", b"SIU^S13^SIU_S13"), (b"20260320100000", b"20260321080000"),
         (b"^20260325140000^20260325143000", b"^20260326090000^20260326093000")),  # rescheduled
        {"status": "booked", "start_at": "2026-03-26T09:00:00Z",
         "end_at": "2026-03-26T09:30:00Z"},
        ((b"SIU^S12^SIU_S12", b"SIU^S15^SIU_S15"), (b"20260320100000", b"20260319090000")),
    ),
    Case(  # MDM^T02: an authenticated echo report (TXA-12 unique document number)
        "mdm/msft-MDM-T02-01.hl7", "DocumentReference", "documents",
        {"status": "current", "doc_status": "final", "type_code": "DI",
         "doc_date": "2008-01-31T15:55:00+02:15"},  # TXA-4, its offset kept
        # T04 with TXA-19 CA: the document cancelled later
        ((b"MDM^T02^MDM_T02", b"MDM^T04^MDM_T04"), (b"200801311600+0215|", b"200802011000+0215|"),
         (b"|AU|||||54321", b"|AU||CA|||54321")),
        {"status": "entered-in-error", "doc_status": "final", "type_code": "DI"},
        # TXA-17 IP: a preliminary version from before it was authenticated
        ((b"200801311600+0215|", b"200801311500+0215|"), (b"|AU|||||54321", b"|IP|||||54321")),
    ),
]


def _edit(raw: bytes, edits: Edits) -> bytes:
    for old, new in edits:
        assert old in raw, f"{old!r} not in the corpus message"
        raw = raw.replace(old, new)
    return raw


def _map(raw: bytes, offset: int) -> list[CanonicalEvent]:
    ref = RawRef("hl7.raw.v1", 0, offset, "default", datetime(2026, 3, 1, tzinfo=UTC))
    return map_message(raw, ref, load_site_config(None))


def _one(events: list[CanonicalEvent], rtype: str) -> CanonicalEvent:
    (event,) = [e for e in events if e.resource_type == rtype]
    return event


def _row(store: Store, patient: CanonicalEvent, table: str) -> dict[str, Any]:
    chart = queries.patient_chart(store, patient.resource_id)
    assert chart["patient"] is not None and chart["patient"]["id"] == patient.resource_id
    (row,) = chart[table]
    return row


@pytest.fixture
def sink(store: Store) -> ProjectionSink:
    projection = ehr.build()
    prepare(store, projection)
    return ProjectionSink(store, projection)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.table)
def test_corpus_message_fills_the_chart_then_later_updates_and_older_is_ignored(
    sink: ProjectionSink, store: Store, corpus_dir: Path, case: Case,
) -> None:
    raw = (corpus_dir / "hl7v2" / case.path).read_bytes()
    first, later, older = (_map(r, n) for n, r in enumerate(
        (raw, _edit(raw, case.later), _edit(raw, case.older))))
    resource, patient = _one(first, case.resource_type), _one(first, "Patient")
    assert _one(later, case.resource_type).resource_id == resource.resource_id
    assert _one(older, case.resource_type).resource_id == resource.resource_id
    assert _one(older, case.resource_type).resource_version < resource.resource_version < \
        _one(later, case.resource_type).resource_version

    testing.apply_events(sink, first)
    row = _row(store, patient, case.table)
    assert row["id"] == resource.resource_id and row["patient_id"] == patient.resource_id
    assert row["version"] == resource.resource_version
    assert {k: row[k] for k in case.expected} == case.expected
    assert row["resource"] == orjson.loads(resource.resource)

    testing.apply_events(sink, later)
    updated = _row(store, patient, case.table)
    newer = _one(later, case.resource_type)
    assert (updated["version"], updated["event_id"]) == (newer.resource_version, newer.event_id)
    assert {k: updated[k] for k in case.later_expected} == case.later_expected

    stale = _one(older, case.resource_type)
    assert orjson.loads(stale.resource)["status"] != updated["status"], "would show if applied"
    counts = testing.apply_events(sink, older)
    assert counts["applied"] == 0 and counts["stale"] >= 1
    assert _row(store, patient, case.table) == updated


def test_chart_dates_sort_by_instant_whatever_the_senders_offset(
    sink: ProjectionSink, store: Store, corpus_dir: Path
) -> None:
    # Regression: rows sorted by their date text, so 15:55+02:15 (13:40 UTC) came after
    # 14:00 UTC, local clock order instead of time order.
    raw = (corpus_dir / "hl7v2" / "mdm/msft-MDM-T02-01.hl7").read_bytes()
    number = b"1.2.840.317.5947431.51.20080131160038"
    utc = _edit(raw, ((b"TXA|1|DI|TX|200801311555+0215|", b"TXA|1|DI|TX|200801311400+0000|"),
                      (number, number + b".2"), (b"|PS1-20080131160038|", b"|PS1-2|")))
    events = [*_map(raw, 0), *_map(utc, 1)]
    testing.apply_events(sink, events)
    chart = queries.patient_chart(store, _one(_map(raw, 0), "Patient").resource_id)
    dates = [row["doc_date"] for row in chart["documents"]]
    assert dates == ["2008-01-31T15:55:00+02:15", "2008-01-31T14:00:00Z"]


def test_instant_keeps_dates_without_a_time_as_they_are() -> None:
    assert queries._instant("2008-01-31") == "2008-01-31"
    assert queries._instant("2008-01") == "2008-01"
    assert queries._instant(None) == ""
    assert queries._instant("2008-01-31T15:55:00+02:15") == "2008-01-31T13:40:00+00:00"
    assert queries._instant("2008-01-31T15:55:00") == "2008-01-31T15:55:00"
