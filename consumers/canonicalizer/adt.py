"""ADT A01-A08, A11-A13, A28, A31 -> Patient and Encounter.

The trigger decides the Encounter state (v2-to-FHIR ADT message maps); cancellations
(A11/A12/A13) reverse the state the cancelled event set: A11 cancels the encounter, A12
moves the patient back to the prior location, A13 reopens it (no end). Each state is a new
Encounter version with its own event type; A28/A31 are person-level and map the Patient only.
"""

from __future__ import annotations

from fhirbus.hl7 import Segment

from . import identity
from .context import MappingContext
from .datatypes import Json, codeable, fhir_datetime, hd_system, identifier
from .oru import map_supporting_observations
from .patient import map_patient, require_pid

# trigger -> (event type, Encounter.status, status rank for equal timestamps)
ENCOUNTER_TRIGGERS: dict[str, tuple[str, str, int]] = {
    "A01": ("encounter.admitted", "in-progress", 0),
    "A02": ("encounter.transferred", "in-progress", 0),
    "A03": ("encounter.discharged", "finished", 0),
    "A04": ("encounter.registered", "arrived", 0),
    "A05": ("encounter.preadmitted", "planned", 0),
    "A06": ("encounter.class-changed", "in-progress", 0),
    "A07": ("encounter.class-changed", "in-progress", 0),
    "A08": ("encounter.updated", "", 0),
    "A11": ("encounter.admit-cancelled", "cancelled", 1),
    "A12": ("encounter.transfer-cancelled", "in-progress", 1),
    "A13": ("encounter.discharge-cancelled", "in-progress", 1),
}
PERSON_TRIGGERS = {"A28": "patient.registered", "A31": "patient.updated"}
ADT_TRIGGERS = frozenset(ENCOUNTER_TRIGGERS) | frozenset(PERSON_TRIGGERS)

# PV1-2 patient class (HL7 table 0004) -> v3 ActCode (v2-to-FHIR ConceptMap PatientClass).
_CLASS = {"E": "EMER", "I": "IMP", "O": "AMB", "P": "PRENC", "R": "AMB", "B": "IMP",
          "C": "AMB", "N": None, "U": None}
_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def map_adt(ctx: MappingContext) -> None:
    trigger = _trigger(ctx)
    pid = require_pid(ctx)
    evn = ctx.msg.segment("EVN")
    at = ctx.when(evn.get(2) if evn else "")
    person_event = PERSON_TRIGGERS.get(trigger, "patient.upserted")
    map_patient(ctx, pid, person_event, when=at)
    pv1 = ctx.msg.segment("PV1")
    if trigger in ENCOUNTER_TRIGGERS and pv1 is not None:
        map_encounter(ctx, pv1, trigger, at)
    map_supporting_observations(ctx, "adt")


def _trigger(ctx: MappingContext) -> str:
    # Some senders put the real trigger only in EVN-1 (MSH-9.2 empty); MSH-9.2 wins otherwise.
    evn = ctx.msg.segment("EVN")
    return ctx.msg.trigger.strip().upper() or (evn.get(1).strip().upper() if evn else "")


def encounter_id(ctx: MappingContext, pv1: Segment) -> str:
    """Visit number (PV1-19) in its authority; else the patient's admit time; else this
    message (an encounter with no identity of its own)."""
    visit = pv1.get(19).strip()
    if visit:
        scope = hd_system(*(pv1.get(19, 1, 4, s).strip() for s in (1, 2, 3)),
                          ctx.site.identifier_systems) or f"facility:{ctx.facility}"
        return identity.resource_id("Encounter", scope, visit)
    admit = pv1.get(44).strip()
    if admit:
        return identity.resource_id("Encounter", "admit", ctx.patient_id, admit)
    return identity.resource_id("Encounter", "message", ctx.sender, ctx.msg.control_id,
                                ctx.patient_id)


def map_encounter(ctx: MappingContext, pv1: Segment, trigger: str,
                  at: tuple[int, object]) -> None:
    event_type, status, rank = ENCOUNTER_TRIGGERS[trigger]
    body = encounter_body(ctx, pv1, trigger, status)
    ctx.emit("Encounter", encounter_id(ctx, pv1), body, event_type, at, rank)  # type: ignore[arg-type]


def encounter_body(ctx: MappingContext, pv1: Segment, trigger: str, status: str) -> Json:
    start = fhir_datetime(pv1.get(44), ctx.tz)
    end = fhir_datetime(pv1.get(45), ctx.tz)
    if not status:  # A08: the state the PV1 describes
        status = "finished" if end else "in-progress"
    if trigger in ("A13", "A12", "A11"):
        end = None  # the discharge (or the whole visit) did not happen
    body: Json = {"status": status, "class": _class(pv1)}
    ident = identifier(pv1, 19, 1, ctx.site.identifier_systems)
    if ident:
        body["identifier"] = [ident]
    service = codeable(pv1, 10, 1, ctx.site)
    if service:
        body["serviceType"] = service
    if ctx.patient_ref:
        body["subject"] = ctx.patient_ref
    period = {k: v for k, v in (("start", start), ("end", end)) if v}
    if period:
        body["period"] = period
    _hospitalization(ctx, pv1, body)
    locations = _locations(pv1, trigger)
    if locations:
        body["location"] = locations
    return body


def _class(pv1: Segment) -> Json:
    code = pv1.get(2).strip().upper()
    mapped = _CLASS.get(code)
    if mapped:
        return {"system": _ACT_CODE, "code": mapped}
    if code:
        return {"system": "http://terminology.hl7.org/CodeSystem/v2-0004", "code": code}
    return {"system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "code": "UNK"}


def _hospitalization(ctx: MappingContext, pv1: Segment, body: Json) -> None:
    hosp: Json = {}
    for key, field in (("admitSource", 14), ("reAdmission", 13), ("dischargeDisposition", 36)):
        concept = codeable(pv1, field, 1, ctx.site)
        if concept:
            hosp[key] = concept
    preadmit = identifier(pv1, 5, 1, ctx.site.identifier_systems)
    if preadmit:
        hosp["preAdmissionIdentifier"] = preadmit
    if hosp:
        body["hospitalization"] = hosp


def location_display(seg: Segment, n: int) -> str:
    """PL -> text: point of care, room, bed, facility, building, floor."""
    parts = [seg.get(n, 1, c).strip() for c in (1, 2, 3, 4, 7, 8)]
    return ", ".join(p for p in parts if p)


def _locations(pv1: Segment, trigger: str) -> list[Json]:
    # No Location resources are published, so locations are display-only references.
    out: list[Json] = []
    current = location_display(pv1, 3)
    if current:
        out.append({"location": {"display": current},
                    "status": "completed" if trigger == "A03" else "active"})
    prior = location_display(pv1, 6)
    if prior and trigger == "A02":
        out.append({"location": {"display": prior}, "status": "completed"})
    return out
