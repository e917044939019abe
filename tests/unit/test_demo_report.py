"""The demo's pure parts: which messages it sends, its scripted CDC changes, how it reads a
dead letter's reason, and the printed summary (every section present)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhirbus.commands.demo import NOT_HL7, UNMAPPABLE, corpus_messages, print_summary
from fhirbus.supervisor import demo_cdc
from fhirbus.supervisor.demo_report import chart_lines, reason_of

from ..corpus import HL7_CORPUS


def test_batch_files_are_split_and_invalid_files_go_whole(tmp_path: Path) -> None:
    (tmp_path / "adt").mkdir()
    (tmp_path / "invalid").mkdir()
    msh = b"MSH|^~\\&|A|B|C|D|20250101||ADT^A01|%s|P|2.5\rPID|1||1\r"
    (tmp_path / "adt" / "two.hl7").write_bytes(msh % b"1" + msh % b"2")
    (tmp_path / "invalid" / "two.hl7").write_bytes(msh % b"3" + msh % b"4")
    got = corpus_messages(tmp_path)
    assert [label for label, _ in got] == ["adt/two.hl7", "adt/two.hl7", "invalid/two.hl7"]
    assert got[2][1].count(b"MSH") == 2


def test_the_corpus_is_sent_with_the_built_in_bad_messages() -> None:
    if not HL7_CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not at {HL7_CORPUS} (set FHIRBUS_CORPUS)")
    from fhirbus.commands.demo import demo_messages

    sent = demo_messages(HL7_CORPUS)
    assert sent[-2:] == [NOT_HL7, UNMAPPABLE] and len(sent) > 80


def test_cdc_script_inserts_updates_and_deletes_with_fresh_ids_per_run() -> None:
    one, two = demo_cdc.script(1), demo_cdc.script(2)
    assert one.changes == 14 and len(one.steps) == 7
    verbs = [sql.split()[0] for _, step in one.steps for sql, _ in step]
    assert verbs.count("INSERT") == 10 and verbs.count("UPDATE") == 3
    assert verbs.count("DELETE") == 1
    ids_one = {params[0] for _, step in one.steps for _, params in step}
    ids_two = {params[0] for _, step in two.steps for _, params in step}
    assert not ids_one & ids_two


def test_reason_of_runtime_and_listener_dead_letters() -> None:
    assert reason_of({"dlq.error_type": b"UnsupportedMessageType",
                      "dlq.error_message": b"detail=ZZZ^Z99"}) == \
        "UnsupportedMessageType: detail=ZZZ^Z99"
    assert reason_of({"fhirbus.reject_reason": b"no_msh", "fhirbus.reject_code": b"AR",
                      "fhirbus.error_detail": b"message does not start with MSH"}) == \
        "AR no_msh: message does not start with MSH"
    assert reason_of({}) == "(no reason header)"


def test_chart_lines() -> None:
    chart = {"patient_id": "p1", "merged_ids": ["p0"],
             "patient": {"family": "Doe", "given": "J", "birth_date": "1980-01-01",
                         "gender": "female", "mrn": "M1"},
             "results": [{"code": "2345-7", "display": "Glucose", "value": "182",
                          "unit": "mg/dL", "status": "final"}] * 8}
    lines = chart_lines(chart)
    assert lines[0].startswith("patient p1: Doe, J") and "merged from: p0" in lines[1]
    assert "results (8):" in lines[2] and "... 2 more" in lines[-1]


def test_summary_prints_every_section(capsys: pytest.CaptureFixture[str]) -> None:
    print_summary({
        "mllp": "h:1", "settled": {"ok": False, "note": "did not settle: lag 3"},
        "messages": {"sent": 3, "accepted": 2, "rejected": 1, "codes": {"AA": 2, "AR": 1}},
        "cdc": {"note": "applied 14 changes", "steps": ["insert 3 patients"]},
        "topics": {"fhir.patient.v1": 2}, "read_models": {"ehr": {"patients": 2},
                                                         "billing": "not started"},
        "chart": None, "dead_letters": {"hl7.rejected.v1": {"AR no_msh: x": 1}},
        "reconciliation": {"report": {"run_id": "r", "total_drift": 0, "duration_s": 1,
                                      "checks": [{"name": "raw-hl7", "compared": 2,
                                                  "drift": 0, "notes": []}]}}})
    out = capsys.readouterr().out
    for title in ("HL7 v2 messages", "CDC changes", "Canonical events per topic (2 in all)",
                  "Input records", "Read models",
                  "Sample patient chart", "Dead letters", "Reconciliation"):
        assert f"== {title}" in out
    assert "2 accepted, 1 rejected" in out and "billing    not started" in out
    assert "raw-hl7" in out and "did not settle: lag 3" in out
