"""SIU^S12-S15 -> Appointment (SCH, TQ1, AIS/AIG/AIL/AIP, NTE)."""

from __future__ import annotations

from fhirbus.hl7 import Segment

from . import identity
from .context import MappingContext
from .datatypes import Json, codeable, fhir_instant, hd_system
from .errors import MissingRequiredSegment
from .oru import map_supporting_observations
from .patient import map_patient, require_pid

# trigger -> (Appointment.status, event action, rank)
SIU_TRIGGERS: dict[str, tuple[str, str, int]] = {
    "S12": ("booked", "booked", 0),
    "S13": ("booked", "rescheduled", 1),
    "S14": ("booked", "modified", 1),
    "S15": ("cancelled", "cancelled", 2),
}
# SCH-25 filler status (table 0278) overrides the trigger's default where it says more.
_FILLER_STATUS = {"PENDING": "pending", "WAITLIST": "waitlist", "CANCELLED": "cancelled",
                  "DELETED": "entered-in-error", "NOSHOW": "noshow", "COMPLETE": "fulfilled",
                  "ARRIVED": "arrived", "STARTED": "arrived", "BOOKED": "booked",
                  "OVERBOOK": "booked", "DC": "cancelled"}
_RESOURCES = (("AIS", 3), ("AIG", 3), ("AIL", 3), ("AIP", 3))
_STARTS = (("AIS", 4), ("AIG", 8), ("AIL", 6), ("AIP", 6))


def map_siu(ctx: MappingContext) -> None:
    sch = ctx.msg.segment("SCH")
    if sch is None:
        raise MissingRequiredSegment("SCH")
    map_patient(ctx, require_pid(ctx))
    status, action, rank = SIU_TRIGGERS[ctx.msg.trigger.strip().upper()]
    filler = _FILLER_STATUS.get(sch.get(25).strip().upper())
    if filler and status != "cancelled":
        status = filler
    body: Json = {"status": status}
    ident = _ids(ctx, sch)
    if ident:
        body["identifier"] = ident
    for key, concept in (("appointmentType", codeable(sch, 8, 1, ctx.site)),
                         ("reasonCode", codeable(sch, 7, 1, ctx.site))):
        if concept:
            body[key] = [concept] if key == "reasonCode" else concept
    service = codeable(ctx.msg.segment("AIS"), 3, 1, ctx.site) if ctx.msg.segment(
        "AIS") else None
    if service:
        body["serviceType"] = [service]
    _timing(ctx, sch, body)
    comment = _notes(ctx)
    if comment:
        body["comment"] = comment
    body["participant"] = _participants(ctx)
    rid = identity.resource_id("Appointment", _key(ctx, sch))
    ctx.emit("Appointment", rid, body, f"appointment.{action}", ctx.when(), rank)
    map_supporting_observations(ctx, "siu")


def _key(ctx: MappingContext, sch: Segment) -> str:
    for n in (1, 2):
        number = sch.get(n, 1, 1).strip()
        if number:
            scope = hd_system(sch.get(n, 1, 2).strip(), sch.get(n, 1, 3).strip(),
                              sch.get(n, 1, 4).strip(), ctx.site.identifier_systems)
            return f"{'placer' if n == 1 else 'filler'}|{scope or ctx.facility}|{number}"
    return f"message|{ctx.sender}|{ctx.msg.control_id}"


def _ids(ctx: MappingContext, sch: Segment) -> list[Json]:
    out = []
    for n in (1, 2):
        number = sch.get(n, 1, 1).strip()
        if number and all(i["value"] != number for i in out):
            out.append({"value": number})
    return out


def _timing(ctx: MappingContext, sch: Segment, body: Json) -> None:
    tq1 = ctx.msg.segment("TQ1")
    start = (fhir_instant(tq1.get(7), ctx.tz) if tq1 else None) or fhir_instant(
        sch.get(11, 1, 4), ctx.tz)
    end = (fhir_instant(tq1.get(8), ctx.tz) if tq1 else None) or fhir_instant(
        sch.get(11, 1, 5), ctx.tz)
    if start is None:
        start = next((t for sid, n in _STARTS for s in ctx.msg.all(sid)
                      if (t := fhir_instant(s.get(n), ctx.tz))), None)
    duration = sch.get(9).strip()
    unit = sch.get(10, 1, 1).strip().upper()
    if duration.isdigit() and unit in ("MIN", "M", "MINUTES", ""):
        body["minutesDuration"] = int(duration)
    elif duration.isdigit() and unit in ("H", "HR", "HOURS"):
        body["minutesDuration"] = int(duration) * 60
    if start:
        body["start"] = start
    if end:
        body["end"] = end


def _notes(ctx: MappingContext) -> str:
    # NTE directly after SCH/TQ1 are appointment notes; those after AIx belong to resources.
    texts, in_header = [], False
    for seg in ctx.msg.segments:
        if seg.id in ("SCH", "TQ1"):
            in_header = True
        elif seg.id == "NTE" and in_header:
            texts.append(seg.get(3).strip())
        elif seg.id != "NTE":
            in_header = False
    return "\n".join(t for t in texts if t)


def _participants(ctx: MappingContext) -> list[Json]:
    out: list[Json] = [{"actor": ctx.patient_ref, "status": "accepted"}]
    for sid, n in _RESOURCES:
        for seg in ctx.msg.all(sid):
            parts = [p.strip() for p in seg.components(n)][:3]
            text = " ".join(p for p in parts[1:] if p) or (parts[0] if parts else "")
            if text:
                out.append({"actor": {"display": text}, "status": "accepted"})
    return out
