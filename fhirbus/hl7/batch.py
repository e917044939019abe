"""Splitting HL7 v2 batch files (FHS/BHS ... BTS/FTS) into messages, at byte level.

Splitting happens before decoding because each message declares its own charset (MSH-18)
and even its own delimiters (a real batch changes MSH-2 between messages).
"""

from __future__ import annotations

import re

from fhirbus.hl7.delimiters import HL7ParseError

__all__ = ["split_batch"]

_ENVELOPE = frozenset({b"FHS", b"BHS", b"BTS", b"FTS"})
_LINE = re.compile(rb"[^\r\n]+")
# Whitespace and MLLP framing bytes (VT, FS) that may sit at the start of a line.
_NOISE = b" \t\x0b\x1c\x0c"


def _segment_starts(raw: bytes) -> list[tuple[int, int, bytes]]:
    """(line start, segment start, segment id) for every non-blank line."""
    found = []
    for match in _LINE.finditer(raw):
        line = match.group()
        body = line.lstrip(_NOISE)
        if body.startswith(b"\xef\xbb\xbf"):
            body = body[3:]
        if body.strip():
            found.append((match.start(), match.end() - len(body), body[:3]))
    return found


def split_batch(raw: bytes) -> list[bytes]:
    """Raw bytes of each message (MSH up to the next MSH or batch header/trailer).

    Slices are byte-exact (terminators and blank lines after a message stay with it). Input
    without a batch envelope and at most one MSH is returned whole as ``[raw]``; without an
    envelope but with several MSH (several messages pasted into one file), it is split at
    each MSH too. An envelope with no messages gives []. Non-envelope segments outside any
    message (a batch whose message lacks its MSH) raise HL7ParseError('no_msh') rather than
    being silently dropped.
    """
    if b"HS" not in raw and raw.count(b"MSH") <= 1:
        return [raw]
    starts = _segment_starts(raw)
    ids = [seg_id for _, _, seg_id in starts]
    if not (set(ids) & _ENVELOPE) and ids.count(b"MSH") <= 1:
        return [raw]
    messages: list[bytes] = []
    begin: int | None = None
    for index, (line_start, seg_start, seg_id) in enumerate(starts, 1):
        if seg_id == b"MSH" or seg_id in _ENVELOPE:
            if begin is not None:
                messages.append(raw[begin:line_start])
            begin = seg_start if seg_id == b"MSH" else None
        elif begin is None:
            raise HL7ParseError(
                "no_msh", f"batch segment {index} is outside any message (missing MSH)", index
            )
    if begin is not None:
        messages.append(raw[begin:])
    return messages
