"""PID -> Patient (v2-to-FHIR PID[Patient]), and the patient's deterministic identity."""

from __future__ import annotations

from fhirbus.hl7 import Segment

from . import identity
from .context import MappingContext
from .datatypes import (
    Json,
    addresses,
    authority,
    codeable,
    fhir_date,
    fhir_datetime,
    hd_system,
    human_names,
    identifier,
    telecoms,
)
from .errors import MissingRequiredField, MissingRequiredSegment

_GENDER = {"M": "male", "F": "female", "O": "other", "A": "other", "U": "unknown",
           "N": "unknown"}


_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def patient_key(ctx: MappingContext, pid: Segment) -> str:
    """Patient id from PID-3 (MR-typed repetition first), scoped by its assigning authority
    or, without one, by the sending facility. PID-2 / PID-4 are legacy fallbacks."""
    for field in (3, 2, 4):
        reps = pid.repetitions(field)
        if not reps:
            continue
        order = sorted(range(1, len(reps) + 1), key=lambda r: pid.get(field, r, 5) != "MR")
        for rep in order:
            value = pid.get(field, rep, 1).strip()
            if value and value != '""':
                return identity.resource_id("Patient", _scope(ctx, pid, field, rep), value)
    raise MissingRequiredField("PID-3", "no patient identifier")


def _scope(ctx: MappingContext, seg: Segment, field: int, rep: int) -> str:
    system = hd_system(*authority(seg, field, rep, 4), ctx.site.identifier_systems)
    return system or f"facility:{ctx.facility}"


def require_pid(ctx: MappingContext) -> Segment:
    pid = ctx.msg.segment("PID")
    if pid is None:
        raise MissingRequiredSegment("PID")
    return pid


def patient_body(ctx: MappingContext, pid: Segment) -> Json:
    systems = ctx.site.identifier_systems
    idents = [
        i
        for field in (3, 2, 4)
        for rep in range(1, len(pid.repetitions(field)) + 1)
        if (i := identifier(pid, field, rep, systems))
    ]
    for field, code in ((18, "AN"), (20, "DL")):  # account number, driver's license
        value = pid.get(field, 1, 1).strip()
        if value and value != '""':
            idents.append({"type": {"coding": [{"system": _V2_0203, "code": code}]},
                           "value": value})
    ssn = pid.get(19).strip()
    if ssn:
        idents.append({"system": "http://hl7.org/fhir/sid/us-ssn", "value": ssn})
    body: Json = {"identifier": idents, "active": True}
    _put(body, "name", human_names(pid, 5) + human_names(pid, 9))  # legal names, then aliases
    _put(body, "telecom", telecoms(pid, 13, "home") + telecoms(pid, 14, "work"))
    _put(body, "gender", _GENDER.get(pid.get(8).strip().upper()))
    _put(body, "birthDate", fhir_date(pid.get(7)))
    _deceased(ctx, pid, body)
    _put(body, "address", addresses(pid, 11))
    _put(body, "maritalStatus", codeable(pid, 16, 1, ctx.site))
    _multiple_birth(pid, body)
    language = codeable(pid, 15, 1, ctx.site)
    if language:
        body["communication"] = [{"language": language, "preferred": True}]
    return body


def _deceased(ctx: MappingContext, pid: Segment, body: Json) -> None:
    when = fhir_datetime(pid.get(29), ctx.tz)
    flag = pid.get(30).strip().upper()
    if when:
        body["deceasedDateTime"] = when
    elif flag in ("Y", "N"):
        body["deceasedBoolean"] = flag == "Y"


def _multiple_birth(pid: Segment, body: Json) -> None:
    order = pid.get(25).strip()
    flag = pid.get(24).strip().upper()
    if order.isdigit() and flag != "N":
        body["multipleBirthInteger"] = int(order)
    elif flag in ("Y", "N"):
        body["multipleBirthBoolean"] = flag == "Y"


def _put(body: Json, key: str, value: object) -> None:
    if value:
        body[key] = value


def map_patient(ctx: MappingContext, pid: Segment, event_type: str = "patient.upserted",
                *, when: tuple[int, object] | None = None) -> str:
    """Set ctx.patient_id and, unless the feed turns it off, emit the Patient."""
    pid_id = patient_key(ctx, pid)
    ctx.patient_id = pid_id
    if ctx.site.emit_patient:
        evn = ctx.msg.segment("EVN")
        at = when or ctx.when(evn.get(2) if evn else "")
        ctx.emit("Patient", pid_id, patient_body(ctx, pid), event_type, at)  # type: ignore[arg-type]
    return pid_id
