"""Byte-level handling of inbound HL7 v2: charset detection (MSH-18) and decoding.

HL7 v2 declares its character set *inside* the message (MSH-18), so the charset has to be
read from the raw bytes before the message can be decoded. Every charset we accept is an
ASCII superset (or, for UTF-8, ASCII-compatible), which is what makes it safe to locate
MSH and its delimiters at byte level first.
"""

from __future__ import annotations

__all__ = [
    "HL7EncodingError",
    "charset_codec",
    "decode_message",
    "detect_charset",
]

_BOM = b"\xef\xbb\xbf"
# Whitespace, MLLP framing bytes (VT, FS) and a BOM that may precede MSH in a raw payload.
_LEADING_NOISE = b" \t\r\n\x0b\x1c" + _BOM

# HL7 table 0211 values -> Python codec. Only ASCII-compatible single-byte sets and UTF-8:
# the multi-byte East-Asian sets (ISO IR87, BIG-5, ...) and UTF-16/32 can hide delimiter
# bytes inside characters, so byte-level MSH detection would be unsafe for them.
_CHARSETS: dict[str, str] = {
    "": "ascii",
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "ISO IR192": "utf-8",
    "8859/1": "latin-1",
    "ISO IR100": "latin-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
}


class HL7EncodingError(ValueError):
    """The bytes cannot be turned into text. ``reason`` is a short machine-readable code.

    Messages never quote message content: inbound HL7 carries PHI.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def charset_codec(msh18: str) -> str | None:
    """Map an MSH-18 value (first repetition, as text) to a Python codec, or None if unknown."""
    return _CHARSETS.get(msh18.strip().upper())


def _find_msh(raw: bytes) -> int:
    """Offset of the MSH segment (at the start or right after a terminator), -1 if none."""
    head = raw.lstrip(_LEADING_NOISE)
    if head.startswith(b"MSH"):
        return len(raw) - len(head)
    positions = [p for p in (raw.find(b"\rMSH"), raw.find(b"\nMSH")) if p >= 0]
    return min(positions) + 1 if positions else -1


def _msh18_bytes(raw: bytes) -> bytes:
    """The first repetition of MSH-18 found at byte level, b'' when absent."""
    start = _find_msh(raw)
    if start < 0:
        return b""
    end = len(raw)
    for terminator in (b"\r", b"\n"):
        pos = raw.find(terminator, start)
        if 0 <= pos < end:
            end = pos
    line = raw[start:end]
    if len(line) < 5:
        return b""
    fields = line.split(line[3:4])
    # fields[0] is "MSH" and fields[1] is MSH-2, so MSH-n sits at index n - 1.
    if len(fields) < 18:
        return b""
    value = fields[17]
    encoding_chars = fields[1]
    if len(encoding_chars) >= 2:
        value = value.split(encoding_chars[1:2], 1)[0]
    return value


def _codec_for(declared: bytes) -> str:
    try:
        label = declared.decode("ascii")
    except UnicodeDecodeError:
        raise HL7EncodingError("unsupported_charset", "MSH-18 is not ASCII text") from None
    codec = charset_codec(label)
    if codec is None:
        # The label is not quoted: nothing guarantees a sender put only a code in MSH-18.
        raise HL7EncodingError("unsupported_charset", "MSH-18 declares an unsupported charset")
    return codec


def detect_charset(raw: bytes) -> str:
    """Python codec name for the charset declared in MSH-18 ('ascii' when none is declared).

    Raises HL7EncodingError(reason='unsupported_charset') for a declared charset we cannot
    decode safely.
    """
    return _codec_for(_msh18_bytes(raw))


def decode_message(raw: bytes) -> tuple[str, str]:
    """Decode one message; returns (text, python codec actually used).

    A leading UTF-8 BOM is dropped: several real senders (and editors that produced sample
    files) prepend one. When MSH-18 is empty the standard says ASCII, but many real senders
    omit MSH-18 while sending UTF-8 (or, in older feeds, Latin-1); rejecting those would
    drop real clinical data, so an empty MSH-18 falls back to UTF-8 when the bytes are valid
    UTF-8 and to Latin-1 (which decodes any byte) otherwise.
    """
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    declared = _msh18_bytes(raw)
    codec = _codec_for(declared)
    if raw.isascii():
        # Every supported codec is an ASCII superset, so pure ASCII decodes identically.
        return raw.decode("ascii"), codec
    if not declared.strip():
        try:
            return raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            return raw.decode("latin-1"), "latin-1"
    try:
        return raw.decode(codec), codec
    except UnicodeDecodeError as exc:
        raise HL7EncodingError(
            "bad_charset_bytes",
            f"bytes at offset {exc.start} are not valid for the declared charset {codec}",
        ) from None
