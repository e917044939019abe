"""OBX -> Observation value, status, interpretation and reference range (v2-to-FHIR OBX).

OBX-2 picks the value[x]: NM/SN -> valueQuantity, valueRange or valueRatio (UCUM units where
the unit is UCUM or a known alias); CE/CWE/CNE -> valueCodeableConcept; ST/TX/FT -> valueString;
TS/DT/DTM -> valueDateTime; TM -> valueTime; ED/RP -> an attachment extension (R4
Observation has no valueAttachment).
"""

from __future__ import annotations

import base64
import binascii
import re

from fhirbus.hl7 import Segment

from .datatypes import Json, codeable, decimal, fhir_datetime, quantity, ucum
from .site import FeedConfig

# OBX-11 (table 0085) -> Observation.status, per the v2-to-FHIR ConceptMap.
OBSERVATION_STATUS = {
    "C": "corrected", "D": "entered-in-error", "F": "final", "I": "registered",
    "N": "cancelled", "O": "registered", "P": "preliminary", "R": "preliminary",
    "S": "preliminary", "U": "final", "W": "entered-in-error", "X": "cancelled",
    "A": "amended",
}
ATTACHMENT_EXTENSION = "https://fhirbus.dev/fhir/StructureDefinition/observation-value-attachment"
_INTERPRETATION = frozenset({
    "<", ">", "A", "AA", "B", "D", "DET", "E", "EX", "EXP", "H", "HH", "HM", "HU", "HX", "I",
    "IE", "IND", "L", "LL", "LU", "LX", "MS", "N", "NCL", "ND", "NEG", "NR", "NS", "OBX", "POS",
    "QCF", "R", "RR", "S", "SDD", "SYN-R", "SYN-S", "TOX", "U", "UNE", "VS", "W", "WR"
})
_V3_INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
_COMPARATOR = re.compile(r"^\s*(<=|>=|<|>)\s*([+-]?\d+\.?\d*)\s*$")
_RANGE = re.compile(r"^\s*([+-]?\d+\.?\d*)\s*-\s*([+-]?\d+\.?\d*)\s*$")
_TEXT_TYPES = frozenset({"ST", "TX", "FT", "ID", "IS", "NA", "CX", "XCN", "XPN", "XAD", "XON",
                         "EI", "CP", "MO", "PN", "TN", "AD", "CK", "CN", "DR"})


def observation_status(code: str, fallback: str = "unknown") -> str:
    return OBSERVATION_STATUS.get(code.strip().upper(), fallback)


def value(obx: Segment, site: FeedConfig) -> Json:
    """value[x] (or the attachment extension) for one OBX, {} when OBX-5 is empty."""
    if not obx.field(5).strip() or obx.field(5) == '""':
        return {}
    kind = obx.get(2).strip().upper()
    if kind in ("NM", "SN"):
        return _numeric(obx, kind, site)
    if kind in ("CE", "CWE", "CNE", "CF", "CD"):
        concept = codeable(obx, 5, 1, site)
        return {"valueCodeableConcept": concept} if concept else {}
    if kind in ("TS", "DT", "DTM"):
        when = fhir_datetime(obx.get(5), site.timezone)
        return {"valueDateTime": when} if when else _text(obx)
    if kind == "TM":
        return _time(obx)
    if kind in ("ED", "RP"):
        return _attachment(obx, kind)
    return _text(obx)


def _text(obx: Segment) -> Json:
    reps = [
        "^".join(c for c in obx.components(5, r))
        for r in range(1, len(obx.repetitions(5)) + 1)
    ]
    text = "\n".join(r for r in reps if r.strip()).strip("^")
    return {"valueString": text} if text else {}


def _numeric(obx: Segment, kind: str, site: FeedConfig) -> Json:
    units = obx.components(6)
    if len(obx.repetitions(5)) > 1:
        return _text(obx)  # repeated numbers have no single Quantity
    if kind == "SN":
        return _structured_numeric(obx, units, site)
    raw = obx.get(5)
    number = decimal(raw)
    if number is not None:
        return {"valueQuantity": quantity(number, units, site.unit_map)}
    match = _COMPARATOR.match(raw)
    if match:
        q = quantity(decimal(match.group(2)) or 0, units, site.unit_map)
        return {"valueQuantity": {"value": q.pop("value"), "comparator": match.group(1), **q}}
    return _text(obx)


def _structured_numeric(obx: Segment, units: list[str], site: FeedConfig) -> Json:
    comparator, first, sep, second = (obx.get(5, 1, c).strip() for c in (1, 2, 3, 4))
    n1, n2 = decimal(first), decimal(second)
    if n1 is not None and n2 is not None and sep in ("-", "^", ""):
        return {"valueRange": {"low": quantity(n1, units, site.unit_map),
                               "high": quantity(n2, units, site.unit_map)}}
    if n1 is not None and n2 is not None and sep in (":", "/"):
        return {"valueRatio": {"numerator": {"value": n1}, "denominator": {"value": n2}}}
    if n1 is not None and not second:
        q = quantity(n1, units, site.unit_map)
        if comparator in ("<", "<=", ">", ">="):
            q = {"value": q.pop("value"), "comparator": comparator, **q}
        return {"valueQuantity": q}
    return _text(obx)


def _time(obx: Segment) -> Json:
    digits = re.match(r"^(\d{2})(\d{2})?(\d{2})?", obx.get(5).strip())
    if not digits:
        return _text(obx)
    hh, mm, ss = (g or "00" for g in digits.groups())
    return {"valueTime": f"{hh}:{mm}:{ss}"}


def _attachment(obx: Segment, kind: str) -> Json:
    if kind == "RP":
        pointer = obx.get(5, 1, 1).strip()
        attachment: Json = {"url": pointer} if pointer else {}
        mime = _mime(obx.get(5, 1, 3), obx.get(5, 1, 4))
    else:
        mime = _mime(obx.get(5, 1, 2), obx.get(5, 1, 3))
        data = obx.get(5, 1, 5).strip()
        attachment = {}
        if obx.get(5, 1, 4).strip().upper() == "BASE64" and _is_base64(data):
            attachment["data"] = data
    if mime:
        attachment["contentType"] = mime
    if not attachment:
        return {}
    return {"extension": [{"url": ATTACHMENT_EXTENSION, "valueAttachment": attachment}]}


def _mime(kind: str, subtype: str) -> str | None:
    kind, subtype = kind.strip().lower(), subtype.strip().lower()
    if kind in ("application", "audio", "image", "text", "video", "multipart") and subtype:
        return f"{kind}/{subtype}"
    return None


def _is_base64(data: str) -> bool:
    if not data:
        return False
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def interpretations(obx: Segment) -> list[Json]:
    out = []
    for rep in range(1, len(obx.repetitions(8)) + 1):
        code = obx.get(8, rep, 1).strip()
        if not code:
            continue
        system = _V3_INTERP if code in _INTERPRETATION else (
            "http://terminology.hl7.org/CodeSystem/v2-0078")
        coding: Json = {"system": system, "code": code}
        display = obx.get(8, rep, 2).strip()
        if display and display != code:
            coding["display"] = display
        out.append({"coding": [coding]})
    return out


def reference_range(obx: Segment, site: FeedConfig) -> list[Json]:
    text = obx.get(7).strip()
    if not text:
        return []
    out: Json = {"text": text}
    match = _RANGE.match(text)
    if match:
        units = obx.components(6)
        low, high = decimal(match.group(1)), decimal(match.group(2))
        if low is not None and high is not None:
            out["low"] = _simple(quantity(low, units, site.unit_map))
            out["high"] = _simple(quantity(high, units, site.unit_map))
    return [out]


def _simple(q: Json) -> Json:
    """Reference range bounds are SimpleQuantity: UCUM coded only when the unit is UCUM."""
    return q if "code" in q or "unit" not in q else {"value": q["value"], "unit": q["unit"]}


def has_ucum(unit: str, system: str, site: FeedConfig) -> bool:
    return ucum(unit, system, site.unit_map) is not None
