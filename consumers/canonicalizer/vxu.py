"""VXU^V04 -> Immunization per RXA (CDC IG for immunization messaging, v2-to-FHIR RXA)."""

from __future__ import annotations

from fhirbus.hl7 import Segment

from . import identity
from .context import MappingContext
from .datatypes import Json, codeable, decimal, fhir_date, fhir_datetime, hd_system, ucum
from .errors import MissingRequiredField
from .oru import map_supporting_observations
from .patient import map_patient, require_pid

_NOT_DONE = frozenset({"RE", "NA"})


def map_vxu(ctx: MappingContext) -> None:
    map_patient(ctx, require_pid(ctx))
    orc: Segment | None = None
    groups: list[tuple[Segment | None, Segment, list[Segment]]] = []
    for seg in ctx.msg.segments:
        if seg.id == "ORC":
            orc = seg
        elif seg.id == "RXA":
            groups.append((orc, seg, []))
        elif seg.id in ("RXR", "OBX") and groups:
            groups[-1][2].append(seg)
    for index, (group_orc, rxa, rest) in enumerate(groups, 1):
        _immunization(ctx, group_orc, rxa, rest, index)
    map_supporting_observations(ctx, "vxu")


def _key(ctx: MappingContext, orc: Segment | None, rxa: Segment) -> str:
    for n in (3, 2):
        number = orc.get(n, 1, 1).strip() if orc is not None else ""
        if number and orc is not None:
            scope = hd_system(orc.get(n, 1, 2).strip(), orc.get(n, 1, 3).strip(),
                              orc.get(n, 1, 4).strip(), ctx.site.identifier_systems)
            return f"order|{scope or ctx.facility}|{number}"
    return f"dose|{ctx.patient_id}|{rxa.get(3).strip()}|{rxa.get(5).strip()}"


def _immunization(ctx: MappingContext, orc: Segment | None, rxa: Segment,
                  rest: list[Segment], index: int) -> None:
    vaccine = codeable(rxa, 5, 1, ctx.site)
    if vaccine is None:
        raise MissingRequiredField("RXA-5", "administered code is empty")
    when = fhir_datetime(rxa.get(3), ctx.tz)
    if when is None:
        raise MissingRequiredField("RXA-3", "administration time is empty")
    completion = rxa.get(20).strip().upper()
    status = "not-done" if completion in _NOT_DONE else "completed"
    if rxa.get(21).strip().upper() == "D":
        status = "entered-in-error"
    body: Json = {"status": status, "vaccineCode": vaccine, "patient": ctx.patient_ref,
                  "occurrenceDateTime": when}
    source = rxa.get(9).strip()
    if source in ("00", "01"):
        body["primarySource"] = source == "00"
    if completion == "PA":
        body["isSubpotent"] = True
    reason = codeable(rxa, 18, 1, ctx.site)
    if reason and status == "not-done":
        body["statusReason"] = reason
    _dose(ctx, rxa, body)
    _route(ctx, rest, body)
    _program(ctx, rest, body)
    rid = identity.resource_id("Immunization", _key(ctx, orc, rxa))
    at = ctx.when(rxa.get(22), orc.get(9) if orc is not None else "")
    rank = 2 if status == "entered-in-error" else 0
    ctx.emit("Immunization", rid, body, f"immunization.{status}", at, rank)


def _dose(ctx: MappingContext, rxa: Segment, body: Json) -> None:
    amount = decimal(rxa.get(6))
    if amount is not None and amount != 999:  # 999 = amount unknown (CDC IG)
        dose: Json = {"value": amount}
        unit = rxa.get(7, 1, 1).strip()
        if unit:
            dose["unit"] = unit
            code = ucum(unit, rxa.get(7, 1, 3), ctx.site.unit_map)
            if code:
                dose.update({"system": "http://unitsofmeasure.org", "code": code})
        body["doseQuantity"] = dose
    lot = rxa.get(15).strip()
    if lot:
        body["lotNumber"] = lot
    expires = fhir_date(rxa.get(16))
    if expires:
        body["expirationDate"] = expires


def _route(ctx: MappingContext, rest: list[Segment], body: Json) -> None:
    rxr = next((s for s in rest if s.id == "RXR"), None)
    if rxr is None:
        return
    for key, n in (("route", 1), ("site", 2)):
        concept = codeable(rxr, n, 1, ctx.site)
        if concept:
            body[key] = concept


def _program(ctx: MappingContext, rest: list[Segment], body: Json) -> None:
    """OBX 64994-7 (VFC eligibility) and 30963-3 (funding source) -> Immunization fields."""
    for obx in (s for s in rest if s.id == "OBX"):
        code = obx.get(3, 1, 1).strip()
        concept = codeable(obx, 5, 1, ctx.site)
        if concept and code == "64994-7":
            body.setdefault("programEligibility", []).append(concept)
        elif concept and code == "30963-3":
            body["fundingSource"] = concept
