"""From a frame to a verdict and the records to store: pure functions, no sockets or Kafka.

Classification order matters: framing errors first, then charset, then structure (AR: the
bytes are not an HL7 message we can read), then header semantics (AE: an HL7 message this
listener will not take). The fast parser is the only parser used here, and only its
header: ``parse_header`` checks every segment as ``parse`` does but keeps only the MSH, the
one segment an ACK and the raw record's headers need.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from fhirbus.hl7 import (
    HL7EncodingError,
    HL7ParseError,
    Message,
    decode_message,
    parse,
    parse_header,
)

from . import framing
from .ack import AckError, AckHeader
from .claimcheck import ClaimCheck

Headers = list[tuple[str, bytes]]
# Reject reason for a frame whose classification raised: our bug, not the sender's.
INTERNAL_ERROR = "internal_error"

# Reject reason -> (ACK code, HL7 table 0357 code, error location, safe text).
_REASONS: dict[str, tuple[str, str, str, str]] = {
    framing.MISSING_START_BLOCK: ("AR", "207", "", "bytes outside an MLLP frame"),
    framing.TRUNCATED: ("AR", "207", "", "MLLP frame ended before its end block"),
    framing.TOO_LARGE: ("AE", "207", "", "message exceeds the size limit"),
    "empty": ("AR", "100", "", "no segments in message"),
    "no_msh": ("AR", "100", "MSH^1", "message does not start with MSH"),
    "bad_encoding_characters": ("AR", "102", "MSH^1^2", "invalid encoding characters"),
    "bad_segment_id": ("AR", "100", "", "invalid segment id"),
    "multiple_msh": ("AR", "100", "", "more than one MSH in one frame"),
    "batch_envelope": ("AR", "100", "", "batch envelope inside a message frame"),
    "msh_only": ("AR", "100", "", "message has no segment after MSH"),
    "unsupported_charset": ("AE", "103", "MSH^1^18", "unsupported character set"),
    "bad_charset_bytes": ("AE", "103", "MSH^1^18", "bytes invalid for the declared charset"),
    "unsupported_version": ("AE", "203", "MSH^1^12", "unsupported HL7 version"),
    "missing_message_type": ("AE", "101", "MSH^1^9", "message type is empty"),
    # HL7 v2 original mode (2.9.2.2 c): AR is the reply to a message refused for reasons
    # unrelated to its content, "system down or internal error"; 207 is that error.
    INTERNAL_ERROR: ("AR", "207", "", "internal error; send it again later"),
}
_GENERIC = ("AR", "100", "", "not a parseable HL7 message")


@dataclass(frozen=True, slots=True)
class Policy:
    supported_versions: frozenset[str]


@dataclass(frozen=True, slots=True)
class Verdict:
    """Accepted when ``reason`` is None. ``header`` is None only when no MSH could be read."""

    code: str  # AA, AE or AR
    header: AckHeader | None
    reason: str | None = None
    error: AckError | None = None
    msh9: str = ""
    codec: str = ""

    @property
    def accepted(self) -> bool:
        return self.reason is None


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    key: bytes
    value: bytes
    headers: Headers = field(default_factory=list)


def classify(frame: framing.Frame, policy: Policy) -> Verdict:
    if frame.error is not None:
        return _reject(frame.error, _header_only(frame.payload))
    raw = frame.payload
    try:
        text, codec = decode_message(raw)
    except HL7EncodingError as exc:
        return _reject(exc.reason, _header_only(raw))
    try:
        msg, segment_count = parse_header(text)
    except HL7ParseError as exc:
        return _reject(exc.reason, _header_from_text(text, codec))
    msh = msg.segments[0]
    # MSH-9's parts, each read once: code, trigger event, message structure.
    msh9_parts = [msh.get(9), msh.get(9, 1, 2), msh.get(9, 1, 3)]
    header = _header(msg, codec, msh9_parts[1])
    msh9 = _message_type(msh9_parts)
    if segment_count < 2:
        return _reject("msh_only", header, msh9, codec)
    if not _version_supported(header.version, policy.supported_versions):
        return _reject("unsupported_version", header, msh9, codec)
    if not msh9_parts[0]:
        return _reject("missing_message_type", header, msh9, codec)
    return Verdict("AA", header, msh9=msh9, codec=codec)


def unclassified(frame: framing.Frame) -> Verdict:
    """The verdict for a frame ``classify`` raised on, so it is still NAKed and kept.

    The header is read best effort, for MSA-2 and the sender's delimiters; the same bug may
    break that too, and then the NAK goes out without it rather than not at all.
    """
    try:
        header = _header_only(frame.payload)
    except Exception:
        header = None
    return _reject(INTERNAL_ERROR, header)


def _version_supported(version: str, supported: frozenset[str]) -> bool:
    """Exact match, or a patch level of a listed version (2.6.1 under 2.6). An absent
    MSH-12 is accepted: real feeds omit it, and later stages own that judgment."""
    if not version or version in supported:
        return True
    return any(version.startswith(v + ".") for v in supported if v.count(".") == 1)


def _message_type(parts: list[str]) -> str:
    """MSH-9 joined with '^' whatever the sender's component separator, e.g. ADT^A01^ADT_A01."""
    end = len(parts)
    while end and not parts[end - 1]:
        end -= 1
    return "^".join(parts[:end])


def _reject(reason: str, header: AckHeader | None, msh9: str = "", codec: str = "") -> Verdict:
    code, err, location, text = _REASONS.get(reason, _GENERIC)
    return Verdict(code, header, reason, AckError(err, text, location), msh9, codec)


def _header(msg: Message, codec: str, trigger: str | None = None) -> AckHeader:
    msh = msg.segments[0]
    d = msg.delimiters
    return AckHeader(
        field_sep=d.field,
        encoding_chars=msh.field(2),
        sending_app=msh.field(3),
        sending_facility=msh.field(4),
        receiving_app=msh.field(5),
        receiving_facility=msh.field(6),
        trigger=msg.trigger if trigger is None else trigger,
        control_id=msh.field(10),
        processing_id=msh.field(11),
        version=msh.get(12),
        accept_ack_type=msh.get(15).strip(),
        app_ack_type=msh.get(16).strip(),
        charset_field=msh.field(18).split(d.repetition or "\r")[0],
        codec=codec,
    )


def _header_from_text(text: str, codec: str) -> AckHeader | None:
    """The header of a message whose body did not parse: parse its first line alone."""
    first = text.lstrip("\ufeff \t\r\n\x0b").replace("\n", "\r").split("\r", 1)[0]
    try:
        return _header(parse(first), codec)
    except (HL7ParseError, IndexError):
        return None


def _header_only(raw: bytes) -> AckHeader | None:
    """Best-effort header for bytes that could not be decoded or framed.

    Latin-1 maps every byte to one character and back, so the echoed header fields come
    back byte for byte whatever the real charset was.
    """
    head = raw[:65536]
    return _header_from_text(head.decode("latin-1"), "latin-1")


def dedup_key(header: AckHeader, raw: bytes) -> str | None:
    """Retransmission key: sending app, facility, control id, and the content digest.

    The digest is part of the key because real feeds reuse control ids for different
    messages (the corpus has several); treating those as resends would drop data. None when
    there is no control id to recognise a resend by.
    """
    if not header.control_id:
        return None
    h = hashlib.sha256()
    for part in (header.sending_app, header.sending_facility, header.control_id):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    h.update(hashlib.sha256(raw).digest())
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class Origin:
    """Where and when a frame arrived."""

    listener_id: str
    feed: str
    peer: str
    received_at: datetime


def raw_record(
    topic: str,
    frame: framing.Frame,
    verdict: Verdict,
    origin: Origin,
    trace: Sequence[tuple[str, bytes]] = (),
) -> Record:
    """The raw topic record: the payload byte for byte; ``trace`` links it to the span."""
    headers = _base_headers(verdict, origin) + list(trace)
    return Record(topic, origin.feed.encode(), frame.payload, headers)


def rejected_record(
    topic: str,
    frame: framing.Frame,
    verdict: Verdict,
    origin: Origin,
    trace: Sequence[tuple[str, bytes]] = (),
) -> Record:
    """A raw record plus why it was refused, so ops can replay it once the cause is fixed."""
    record = raw_record(topic, frame, verdict, origin, trace)
    error = verdict.error
    record.headers.extend([
        ("fhirbus.reject_reason", (verdict.reason or "").encode()),
        ("fhirbus.reject_code", verdict.code.encode()),
        ("fhirbus.error_detail", (error.text if error else "").encode()),
        ("fhirbus.size", str(frame.size).encode()),
    ])
    truncated = frame.truncated
    if isinstance(frame, framing.SpilledFrame) and isinstance(frame.spill, ClaimCheck):
        truncated = _add_claim_check(record.headers, frame.spill, frame.size)
    if truncated:
        record.headers.append(("fhirbus.truncated", b"true"))
    return record


def _add_claim_check(headers: Headers, claim: ClaimCheck, size: int) -> bool:
    """Where the unit's full bytes are (a sealed claim check), or why they are not; returns
    whether bytes were discarded, by the cap or because the file failed."""
    if not claim.ok:
        headers.append(("fhirbus.claim_check_error", (claim.error or "").encode()))
        return True
    headers += [
        ("fhirbus.claim_check", str(claim.path).encode()),
        ("fhirbus.claim_check_sha256", claim.sha256.encode()),
        ("fhirbus.claim_check_bytes", str(claim.stored).encode()),
    ]
    return size > claim.stored


def _base_headers(verdict: Verdict, origin: Origin) -> Headers:
    h = verdict.header
    stamp = origin.received_at.isoformat(timespec="milliseconds")
    headers: Headers = [
        ("fhirbus.received_at", stamp.encode()),
        ("fhirbus.peer", origin.peer.encode()),
        ("fhirbus.listener_id", origin.listener_id.encode()),
        ("fhirbus.feed", origin.feed.encode()),
    ]
    if h is not None:
        enc = h.codec or "latin-1"
        headers += [
            ("hl7.msh9", verdict.msh9.encode(enc, "replace")),
            ("hl7.msh10", h.control_id.encode(enc, "replace")),
            ("hl7.msh12", h.version.encode(enc, "replace")),
        ]
    if verdict.codec:
        headers.append(("hl7.charset", verdict.codec.encode()))
    return headers
