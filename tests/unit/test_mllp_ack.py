"""ACK/NAK building: echo, swap, delimiters, codes, ERR segments, and no PHI."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fhirbus.producers.mllp.ack import (
    AckError,
    AckHeader,
    build_ack,
    is_enhanced,
    wants_accept_ack,
)

NOW = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
HEADER = AckHeader(
    sending_app="LAB^1.2.3^ISO",
    sending_facility="HOSP",
    receiving_app="EHR",
    receiving_facility="MAIN",
    trigger="R01",
    control_id="CTRL-42",
    processing_id="P",
    version="2.5.1",
)


def segments(ack: bytes) -> list[list[str]]:
    return [s.split("|") for s in ack.decode().split("\r") if s]


def test_aa_echoes_control_id_and_swaps_sender_and_receiver() -> None:
    msh, msa = segments(build_ack(HEADER, "AA", ack_control_id="A1", now=NOW, own_app="me"))
    assert msh[2:6] == ["EHR", "MAIN", "LAB^1.2.3^ISO", "HOSP"]
    assert msh[8] == "ACK^R01^ACK" and msh[9] == "A1" and msh[10:12] == ["P", "2.5.1"]
    assert msh[6] == "20240506070809.123+0000"
    assert msa == ["MSA", "AA", "CTRL-42"]


def test_nak_has_err_segment_in_the_versions_format() -> None:
    err = AckError("203", "unsupported HL7 version", "MSH^1^12")
    new = segments(build_ack(HEADER, "AE", ack_control_id="A", now=NOW, own_app="m", error=err))
    assert new[1] == ["MSA", "AE", "CTRL-42", "unsupported HL7 version"]
    assert new[2] == [
        "ERR",
        "",
        "MSH^1^12",
        "203^Unsupported version id^HL70357",
        "E",
        "",
        "",
        "",
        "unsupported HL7 version",
    ]
    old_header = AckHeader(version="2.3", control_id="9")
    old = segments(build_ack(old_header, "AR", ack_control_id="A", now=NOW, own_app="m", error=err))
    assert old[2] == ["ERR", "MSH^1^12^203&Unsupported version id&HL70357"]
    # A sender that doubles the escape character in MSH-2 (lfh-sample_*): still "&".
    doubled = AckHeader(version="2.3", control_id="9", encoding_chars="^~\\\\&")
    odd = segments(build_ack(doubled, "AR", ack_control_id="A", now=NOW, own_app="m", error=err))
    assert odd[2] == ["ERR", "MSH^1^12^203&Unsupported version id&HL70357"]


def test_custom_delimiters_are_reused() -> None:
    header = AckHeader(field_sep="#", encoding_chars="$%\\*", control_id="X", trigger="A01")
    ack = build_ack(header, "AA", ack_control_id="A", now=NOW, own_app="me").decode()
    assert ack.startswith("MSH#$%\\*#me#")
    assert "#ACK$A01$ACK#" in ack and "MSA#AA#X\r" in ack


def test_without_header_the_ack_is_still_well_formed() -> None:
    err = AckError("100", "message does not start with MSH", "MSH^1")
    ack = build_ack(None, "AR", ack_control_id="A", now=NOW, own_app="me", error=err)
    msh, msa, errseg = segments(ack)
    assert msh[:3] == ["MSH", "^~\\&", "me"] and msa[:3] == ["MSA", "AR", ""]
    assert errseg[0] == "ERR"


def test_enhanced_mode_codes_and_when_to_answer() -> None:
    ack = build_ack(HEADER, "AE", ack_control_id="A", now=NOW, own_app="m", enhanced=True)
    assert segments(ack)[1][1] == "CE"
    assert not is_enhanced(HEADER) and not is_enhanced(None)
    assert is_enhanced(AckHeader(accept_ack_type="AL")) and is_enhanced(
        AckHeader(app_ack_type="NE")
    )
    table = {
        "AL": (True, True),
        "NE": (False, False),
        "ER": (False, True),
        "SU": (True, False),
        "": (True, True),
    }
    for mode, (on_success, on_error) in table.items():
        header = AckHeader(accept_ack_type=mode, app_ack_type="AL")
        assert wants_accept_ack(header, "AA") is on_success, mode
        assert wants_accept_ack(header, "AR") is on_error, mode


@pytest.mark.parametrize("codec", ["latin-1", "utf-8"])
def test_ack_is_encoded_like_the_message(codec: str) -> None:
    header = AckHeader(
        sending_facility="Hôpital",
        control_id="1",
        codec=codec,
        charset_field="8859/1" if codec == "latin-1" else "UNICODE UTF-8",
    )
    ack = build_ack(header, "AA", ack_control_id="A", now=NOW, own_app="m")
    assert "Hôpital".encode(codec) in ack
    assert segments(ack.decode(codec).encode())[0][17] == header.charset_field
