"""HL7 v2 ingest: byte decoding, batch splitting and a fast lazy ER7 parser.

Typical use on the listener hot path::

    for raw in split_batch(payload):
        msg = parse_bytes(raw)
        msg.message_type, msg.control_id, msg.get("PID-3[1].1")
"""

from fhirbus.hl7.delimiters import DEFAULT_DELIMITERS, Delimiters, HL7ParseError
from fhirbus.hl7.encoding import HL7EncodingError, decode_message, detect_charset
from fhirbus.hl7.parser import (
    Message,
    Segment,
    escape,
    parse,
    parse_bytes,
    parse_header,
    split_batch,
    unescape,
)

__all__ = [
    "DEFAULT_DELIMITERS",
    "Delimiters",
    "HL7EncodingError",
    "HL7ParseError",
    "Message",
    "Segment",
    "decode_message",
    "detect_charset",
    "escape",
    "parse",
    "parse_bytes",
    "parse_header",
    "split_batch",
    "unescape",
]
