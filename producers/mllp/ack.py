"""ACK/NAK messages, as a pure function of the inbound header and the verdict.

The ACK reuses the inbound message's delimiters and charset, copies MSH-3..6 (swapped) as
raw field text, and echoes MSH-10 in MSA-2, so a sender can match it whatever its
delimiters. Everything this module writes itself (codes, texts) is plain ASCII without
delimiter characters, and it never copies any field beyond the header: messages are PHI.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# Original mode codes and their enhanced-mode (accept acknowledgment) counterparts.
ENHANCED_CODE = {"AA": "CA", "AE": "CE", "AR": "CR"}
_ERR_TEXT = {
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "203": "Unsupported version id",
    "207": "Application internal error",
}
# Versions before 2.5 carry the error in ERR-1 (ELD); 2.5 and later use ERR-2/3/4/8.
_ELD_VERSIONS = ("2.1", "2.2", "2.3", "2.4")


@dataclass(frozen=True, slots=True)
class AckHeader:
    """What the ACK needs from the inbound MSH: raw field texts and the delimiters in force."""

    field_sep: str = "|"
    encoding_chars: str = "^~\\&"
    sending_app: str = ""
    sending_facility: str = ""
    receiving_app: str = ""
    receiving_facility: str = ""
    trigger: str = ""
    control_id: str = ""
    processing_id: str = ""
    version: str = ""
    accept_ack_type: str = ""
    app_ack_type: str = ""
    charset_field: str = ""  # MSH-18 as written, echoed so the ACK declares its own bytes
    codec: str = "ascii"  # how to encode the ACK: the codec the message was decoded with


@dataclass(frozen=True, slots=True)
class AckError:
    """Why a message was not accepted: HL7 table 0357 code, a location, a safe text."""

    code: str
    text: str
    location: str = ""  # e.g. "MSH^1^12": segment^sequence^field


def is_enhanced(header: AckHeader | None) -> bool:
    """Enhanced mode when the sender valued MSH-15 or MSH-16 with a known code."""
    if header is None:
        return False
    known = ("AL", "NE", "ER", "SU")
    return header.accept_ack_type in known or header.app_ack_type in known


def wants_accept_ack(header: AckHeader | None, code: str) -> bool:
    """Whether an enhanced-mode sender asked for an accept ACK with this outcome (MSH-15).

    An empty MSH-15 in enhanced mode is read as AL: answering is the safe side for a
    sender that waits, and a sender that does not wait simply ignores the reply.
    """
    mode = header.accept_ack_type if header is not None else ""
    if mode == "NE":
        return False
    if mode == "ER":
        return code != "AA"
    if mode == "SU":
        return code == "AA"
    return True


def build_ack(
    header: AckHeader | None,
    code: str,
    *,
    ack_control_id: str,
    now: datetime,
    own_app: str,
    enhanced: bool = False,
    error: AckError | None = None,
) -> bytes:
    """ACK bytes (no MLLP framing). ``code`` is AA/AE/AR; ``enhanced`` turns it into CA/CE/CR."""
    h = header or AckHeader()
    fs, comp = h.field_sep, h.encoding_chars[:1] or "^"
    msa_code = ENHANCED_CODE[code] if enhanced else code
    msh = [
        "MSH",
        h.encoding_chars,
        h.receiving_app or own_app,
        h.receiving_facility,
        h.sending_app,
        h.sending_facility,
        hl7_timestamp(now),
        "",
        comp.join(["ACK", h.trigger, "ACK"]) if h.trigger else "ACK",
        ack_control_id,
        h.processing_id or "P",
        h.version or "2.5",
    ]
    if h.charset_field:
        msh += ["", "", "", "", "", h.charset_field]
    segments = [fs.join(msh), fs.join(["MSA", msa_code, h.control_id, *_msa_text(error)])]
    if error is not None:
        segments.append(_err_segment(error, h.version, fs, comp, h.encoding_chars))
    return ("\r".join(segments) + "\r").encode(h.codec, errors="replace")


def hl7_timestamp(now: datetime) -> str:
    """DTM with milliseconds and offset, e.g. 20240506070809.123+0000."""
    offset = now.strftime("%z") if now.utcoffset() else "+0000"
    return (
        f"{now.year:04d}{now.month:02d}{now.day:02d}{now.hour:02d}{now.minute:02d}"
        f"{now.second:02d}.{now.microsecond // 1000:03d}{offset}"
    )


def _msa_text(error: AckError | None) -> list[str]:
    # MSA-3 is deprecated since 2.4 but still the first place many receivers look.
    return [error.text] if error is not None else []


def _err_segment(error: AckError, version: str, fs: str, comp: str, enc: str) -> str:
    # The subcomponent separator is MSH-2's 4th character, but some senders double the
    # escape character (``^~\\&``, seen in real feeds): skip repeats of the first three.
    sub = next((c for c in enc[3:] if c not in enc[:3]), "&")
    code_text = _ERR_TEXT.get(error.code, "Application error")
    if version.startswith(_ELD_VERSIONS) and not version.startswith("2.5"):
        # ELD: segment^sequence^field^code&text&table
        loc = error.location.split("^") if error.location else []
        loc += [""] * (3 - len(loc))
        return fs.join(["ERR", comp.join([*loc[:3], sub.join([error.code, code_text, "HL70357"])])])
    cwe = comp.join([error.code, code_text, "HL70357"])
    return fs.join(["ERR", "", error.location.replace("^", comp), cwe, "E", "", "", "", error.text])
