"""``fhirbus dlq show``: the original message's structure and the error context, with every
patient value masked unless the operator asks for PHI explicitly (``--show-phi``).

Masking keeps the shape (segments, field numbers, component separators, JSON keys) so an
operator can see *where* a message is odd without seeing *what* it says about a patient.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from fhirbus.hl7 import HL7EncodingError, decode_message

from .records import DeadLetter

MASK = "***"
# Headers that describe transport and processing, never patient content.
_SAFE_HEADERS = frozenset({
    "hl7.msh9", "hl7.msh10", "hl7.msh12", "hl7.charset", "fhirbus.received_at",
    "fhirbus.listener_id", "fhirbus.feed", "fhirbus.peer", "fhirbus.event_type",
    "fhirbus.mapping_version", "fhirbus.reject_reason", "fhirbus.reject_code", "fhirbus.size",
    "fhirbus.truncated", "fhirbus.claim_check", "fhirbus.claim_check_sha256",
    "fhirbus.claim_check_bytes", "fhirbus.claim_check_error",
    "replay-of", "replay-id", "traceparent", "tracestate",
    "cdc.source", "cdc.lsn", "cdc.txid",
})
# CDC envelope parts that are positions and operations, not row values.
_CDC_SAFE_KEYS = frozenset({"op", "source", "ts_ms", "ts_us", "ts_ns", "transaction", "schema"})
# Canonical envelope fields that are identity and provenance, not patient content.
_ENVELOPE_SAFE = ("event_id", "event_type", "resource_type", "resource_id", "resource_version",
                  "occurred_at", "recorded_at", "mapping_version", "schema_version",
                  "correlation_id", "causation_id", "data_classification", "content_type")
_RUN = re.compile(r"[^|^~\\&]+")

AvroDecoder = Callable[[bytes, str], Any]


def show(record: DeadLetter, *, show_phi: bool, avro: AvroDecoder | None = None) -> dict[str, Any]:
    """The record as a JSON-ready dict: identity, error context, headers and the original."""
    listener_key = "fhirbus.listener_id" in record.header_map  # key = feed id, not a patient
    key = (record.key or b"").decode("utf-8", "replace")
    return {
        "id": record.id,
        "dead_lettered_at": record.failed_at.isoformat(),
        "error": error_context(record, show_phi=show_phi),
        "original": {
            "topic": record.original_topic,
            "position": record.original_position,
            "key": key if (show_phi or listener_key or not key) else MASK,
            "headers": original_headers(record, show_phi=show_phi),
            "message_type": record.message_type,
            "source_system": record.source_system,
            "value": decode_value(record, show_phi=show_phi, avro=avro),
            "claim_check": claim_check(record),
        },
        "phi_shown": show_phi,
    }


def claim_check(record: DeadLetter) -> dict[str, Any] | None:
    """Where the full bytes of an oversize listener reject are, and whether this host sees
    the file (it is on the listener's disk; replay reads it from there)."""
    path = record.claim_check
    if path is None:
        return None
    return {"path": path, "sha256": record.header("fhirbus.claim_check_sha256"),
            "present": Path(path).is_file()}


def error_context(record: DeadLetter, *, show_phi: bool) -> dict[str, str]:
    out = {"stage": record.stage, "error_class": record.error_class,
           "error_type": record.error_type, "reason": record.reason}
    if show_phi:
        out["error_message"] = record.error_message
        if detail := record.header("fhirbus.error_detail"):
            out["error_detail"] = detail
    for name, value in record.header_map.items():
        if name.startswith("dlq.") and name != "dlq.error_message":
            out[name.removeprefix("dlq.")] = value
    return out


def original_headers(record: DeadLetter, *, show_phi: bool) -> dict[str, str]:
    return {name: value if (show_phi or name in _SAFE_HEADERS) else MASK
            for name, value in record.header_map.items() if not name.startswith("dlq.")}


def decode_value(record: DeadLetter, *, show_phi: bool, avro: AvroDecoder | None) -> Any:
    value = record.value
    if value is None:
        return {"format": "tombstone"}
    if value.startswith(b"MSH") or value.lstrip(b"\x0b").startswith(b"MSH"):
        return {"format": "hl7v2", "segments": hl7_structure(value, show_phi=show_phi)}
    if value[:1] in (b"{", b"["):
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError:
            pass
        else:
            return {"format": "json", "document": doc if show_phi else mask_json(doc)}
    if value[:1] == b"\x00" and len(value) > 5 and avro is not None:
        try:
            event = avro(value, record.original_topic or "")
        except Exception as exc:  # an unknown schema id: say so, do not guess
            return {"format": "avro", "error": f"cannot decode: {type(exc).__name__}"}
        return {"format": "avro:CanonicalEvent", "envelope": envelope(event, show_phi=show_phi)}
    shown = value[:512].hex() if show_phi else MASK
    return {"format": "binary", "bytes": len(value), "hex": shown}


def hl7_structure(raw: bytes, *, show_phi: bool) -> list[dict[str, Any]]:
    """Segment by segment, numbered fields; MSH is shown (routing, no patient data)."""
    try:
        text, _codec = decode_message(raw.lstrip(b"\x0b"))
    except HL7EncodingError:
        text = raw.decode("latin-1")
    sep = text[3] if len(text) > 3 else "|"
    segments = []
    for line in re.split(r"[\r\n]+", text):
        if not line.strip():
            continue
        parts = line.split(sep)
        seg_id = parts[0][:3]
        if seg_id == "MSH":
            parts = [parts[0], sep, *parts[1:]]  # MSH-1 is the separator itself
        fields = {}
        for n, value in enumerate(parts[1:], start=1):
            if value == "":
                continue
            visible = show_phi or seg_id == "MSH"
            fields[f"{seg_id}-{n}"] = value if visible else _RUN.sub(MASK, value)
        segments.append({"segment": seg_id, "fields": fields})
    return segments


def mask_json(doc: Any, key: str | None = None) -> Any:
    """Keys stay, leaves become ``***``; CDC position/operation parts stay readable."""
    if key in _CDC_SAFE_KEYS:
        return doc
    if isinstance(doc, dict):
        return {k: mask_json(v, k) for k, v in doc.items()}
    if isinstance(doc, list):
        return [mask_json(v) for v in doc]
    if doc is None or isinstance(doc, bool):
        return doc
    return MASK


def envelope(event: Any, *, show_phi: bool) -> dict[str, Any]:
    out: dict[str, Any] = {name: _plain(getattr(event, name, None)) for name in _ENVELOPE_SAFE}
    source = getattr(event, "source", None)
    out["source"] = {k: _plain(getattr(source, k)) for k in source.__slots__} if source else None
    subject = getattr(event, "subject_key", None)
    out["subject_key"] = subject if (show_phi or subject is None) else MASK
    try:
        resource = orjson.loads(event.resource)
    except (orjson.JSONDecodeError, TypeError):
        resource = None
    if resource is not None and not show_phi:
        resource = {k: (v if k in ("resourceType", "id", "meta") else mask_json(v))
                    for k, v in resource.items()}
    out["resource"] = resource
    return out


def _plain(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def render(shown: dict[str, Any]) -> str:
    """The human form of ``show``: error first (what ops came for), then the message."""
    lines = [f"dead letter {shown['id']}  (dead-lettered {shown['dead_lettered_at']})"]
    lines.append("error:")
    lines += [f"  {k}: {v}" for k, v in shown["error"].items()]
    orig = shown["original"]
    position = orig["position"]
    where = f"{orig['topic']}:{position[0]}:{position[1]}" if position else orig["topic"]
    lines.append(f"original: {where or '(none recorded)'}  key={orig['key']}")
    lines.append(f"  message type: {orig['message_type'] or '-'}  "
                 f"source system: {orig['source_system'] or '-'}")
    lines += [f"  header {k}: {v}" for k, v in orig["headers"].items()]
    value = orig["value"]
    if claim := orig.get("claim_check"):
        here = "present on this host" if claim["present"] else "NOT on this host"
        lines.append(f"claim check: {claim['path']}  ({here}; the value below is only the "
                     "head, replay sends the file's bytes)")
    lines.append(f"value ({value['format']}):")
    if value["format"] == "hl7v2":
        for seg in value["segments"]:
            lines.append(f"  {seg['segment']}")
            lines += [f"    {name}: {v}" for name, v in seg["fields"].items()]
    else:
        body = {k: v for k, v in value.items() if k != "format"}
        dumped = orjson.dumps(body, option=orjson.OPT_INDENT_2).decode()
        lines += ["  " + line for line in dumped.splitlines()]
    if not shown["phi_shown"]:
        lines.append(f"(values masked as {MASK}; --show-phi shows them, and is for "
                     "authorized users only)")
    return "\n".join(lines)
