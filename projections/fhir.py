"""Small readers over FHIR R4 JSON, shared by the projections (pure, no I/O)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from fhirbus.schemas.envelope import CanonicalEvent

Json = dict[str, Any]
LOINC = "http://loinc.org"


def ref_id(ref: Any, resource_type: str) -> str | None:
    """``{"reference": "Patient/123"}`` -> ``"123"`` when it points at ``resource_type``."""
    if not isinstance(ref, dict):
        return None
    text = ref.get("reference") or ""
    head, _, tail = text.rpartition("/")
    if tail and head.rsplit("/", 1)[-1] == resource_type:
        return tail
    return None


def patient_of(body: Json, event: CanonicalEvent) -> str | None:
    """The patient a resource belongs to: its subject/patient reference, else the event's
    key (the canonicalizer keys every patient-bound event by the patient's id)."""
    for field in ("subject", "patient"):
        value = body.get(field)
        refs = value if isinstance(value, list) else [value]
        for ref in refs:
            if pid := ref_id(ref, "Patient"):
                return pid
    for participant in body.get("participant") or []:
        if pid := ref_id(participant.get("actor"), "Patient"):
            return pid
    if event.resource_type == "Patient":
        return event.resource_id
    key = event.subject_key
    return key if key and "/" not in key else None


def first_coding(concept: Any, system: str | None = None) -> Json:
    if not isinstance(concept, dict):
        return {}
    codings = concept.get("coding") or []
    for coding in codings:
        if system is None or coding.get("system") == system:
            return coding
    return {} if system else (codings[0] if codings else {})


def code_text(concept: Any) -> tuple[str | None, str | None, str | None]:
    """(system, code, display) preferring a LOINC coding, then the first coding."""
    coding = first_coding(concept, LOINC) or first_coding(concept)
    display = coding.get("display") or (concept or {}).get("text")
    return coding.get("system"), coding.get("code"), display


def value_text(body: Json) -> tuple[str | None, str | None]:
    """An Observation's value as display text, and its unit."""
    if (q := body.get("valueQuantity")) is not None:
        comparator = q.get("comparator") or ""
        value = q.get("value")
        return (f"{comparator}{value}" if value is not None else None), q.get("unit")
    for field in ("valueString", "valueDateTime", "valueTime", "valueBoolean",
                  "valueInteger"):
        if field in body:
            return str(body[field]), None
    if (cc := body.get("valueCodeableConcept")) is not None:
        _, code, display = code_text(cc)
        return display or code, None
    if (rng := body.get("valueRange")) is not None:
        low, high = (rng.get(k, {}).get("value") for k in ("low", "high"))
        return f"{low}-{high}", None
    return None, None


def interpretation(body: Json) -> str | None:
    codes = [c.get("code") for i in body.get("interpretation") or [] for c in
             i.get("coding") or [] if c.get("code")]
    return ",".join(codes) if codes else None


def money_cents(money: Any) -> int | None:
    """A FHIR Money value in integer cents (exact: parsed from its decimal text)."""
    if not isinstance(money, dict) or money.get("value") is None:
        return None
    try:
        return int((Decimal(str(money["value"])) * 100).to_integral_value())
    except (InvalidOperation, ValueError):
        return None


def iso(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else value
