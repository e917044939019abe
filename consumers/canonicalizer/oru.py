"""ORU^R01 -> DiagnosticReport per OBR, Observation per OBX, Specimen per SPM (+ Patient).

Each OBR-4 order is a group: the OBX, NTE and SPM segments that follow it up to the next OBR.
OBX before any OBR (seen in real feeds) become Observations without a report.

Status and lifecycle: OBX-11 / OBR-25 give the FHIR status; the version comes from the status
change time (max of OBR-22 and MSH-7) with a status-rank tiebreak, and the event type names
the status (``observation.preliminary``, ``observation.final``, ``observation.corrected``...),
so a correction is a new version of the same resource, never an overwrite in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fhirbus.hl7 import Segment

from . import identity
from .context import MappingContext
from .datatypes import Json, codeable, entity_identifier, fhir_datetime, fhir_instant, hd_system
from .errors import MissingRequiredField
from .identity import STATUS_RANK
from .observation import interpretations, observation_status, reference_range, value
from .patient import map_patient, require_pid

# OBR-25 (table 0123) -> DiagnosticReport.status.
REPORT_STATUS = {
    "O": "registered", "I": "registered", "S": "partial", "A": "partial", "R": "partial",
    "P": "preliminary", "F": "final", "C": "corrected", "M": "amended", "X": "cancelled",
    "D": "entered-in-error", "W": "entered-in-error",
}


_ABSENT_CODE: Json = {"extension": [{
    "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]}


@dataclass
class Group:
    obr: Segment | None
    obx: list[tuple[Segment, list[Segment]]] = field(default_factory=list)
    spm: list[Segment] = field(default_factory=list)


def groups(segments: list[Segment]) -> list[Group]:
    out: list[Group] = []
    current: Group | None = None
    last_notes: list[Segment] | None = None
    for seg in segments:
        sid = seg.id
        if sid == "OBR":
            current, last_notes = Group(seg), None
            out.append(current)
        elif sid == "OBX":
            if current is None:
                current = Group(None)
                out.append(current)
            last_notes = []
            current.obx.append((seg, last_notes))
        elif sid == "NTE" and last_notes is not None:
            last_notes.append(seg)
        elif sid == "SPM" and current is not None:
            current.spm.append(seg)
            last_notes = None
        elif sid in ("ORC", "PID", "PV1", "TXA"):
            last_notes = None
    return out


def order_identity(ctx: MappingContext, obr: Segment | None, orc: Segment | None) -> str:
    """Filler order number (OBR-3 / ORC-3), else placer (OBR-2 / ORC-2), with its authority."""
    for seg, n in ((obr, 3), (orc, 3), (obr, 2), (orc, 2)):
        if seg is None:
            continue
        number = seg.get(n, 1, 1).strip()
        if number:
            scope = hd_system(seg.get(n, 1, 2).strip(), seg.get(n, 1, 3).strip(),
                              seg.get(n, 1, 4).strip(), ctx.site.identifier_systems)
            kind = "filler" if n == 3 else "placer"
            return f"{kind}|{scope or 'facility:' + ctx.facility}|{number}"
    set_id = obr.get(1).strip() if obr is not None else ""
    return f"message|{ctx.sender}|{ctx.msg.control_id}|{set_id}"


def map_oru(ctx: MappingContext) -> None:
    pid = require_pid(ctx)
    map_patient(ctx, pid)
    orc = ctx.msg.segment("ORC")
    for index, group in enumerate(groups(ctx.msg.segments), 1):
        map_group(ctx, group, orc, index)


def map_group(ctx: MappingContext, group: Group, orc: Segment | None, index: int) -> None:
    obr = group.obr
    order = order_identity(ctx, obr, orc) if obr is not None else (
        f"orphan|{ctx.sender}|{ctx.msg.control_id}|{index}")
    at = ctx.when(*_status_times(ctx, obr))
    specimens = [_specimen(ctx, spm, order, n) for n, spm in enumerate(group.spm, 1)]
    specimen_refs = [{"reference": f"Specimen/{s}"} for s in specimens]
    obs_ids = _observations(ctx, group, order, at, specimen_refs)
    if obr is None:
        return
    code = codeable(obr, 4, 1, ctx.site)
    if code is None:
        raise MissingRequiredField("OBR-4", "universal service identifier is empty")
    status = _report_status(obr, [s for _, s in obs_ids])
    body: Json = {"identifier": _order_identifiers(ctx, obr), "status": status, "code": code}
    if not body["identifier"]:
        del body["identifier"]
    if ctx.patient_ref:
        body["subject"] = ctx.patient_ref
    _times(ctx, obr, body)
    if specimen_refs:
        body["specimen"] = specimen_refs
    if obs_ids:
        body["result"] = [{"reference": f"Observation/{i}"} for i, _ in obs_ids]
    rid = identity.resource_id("DiagnosticReport", order)
    ctx.emit("DiagnosticReport", rid, body, f"diagnosticreport.{status}", at,
             STATUS_RANK.get(status, 0))


def _status_times(ctx: MappingContext, obr: Segment | None) -> tuple[str, ...]:
    """The later of OBR-22 (status change) and MSH-7: both move along the lifecycle."""
    candidates = [v for v in ((obr.get(22) if obr else ""), ctx.msh.get(7)) if v.strip()]
    parsed = [(ts.epoch_ms, v) for v in candidates if (ts := ctx.ts(v))]
    return (max(parsed)[1],) if parsed else ()


def _report_status(obr: Segment, obs_statuses: list[str]) -> str:
    status = REPORT_STATUS.get(obr.get(25).strip().upper())
    if status:
        return status
    known = [s for s in obs_statuses if s in STATUS_RANK and s != "unknown"]
    if not known:
        return "unknown"
    lowest = min(known, key=STATUS_RANK.__getitem__)
    return lowest if lowest in REPORT_STATUS.values() else "partial"


def _order_identifiers(ctx: MappingContext, obr: Segment) -> list[Json]:
    out = []
    for n, code in ((2, "PLAC"), (3, "FILL")):
        ident = entity_identifier(obr, n, ctx.site.identifier_systems)
        if ident:
            ident["type"] = {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": code}]}
            out.append(ident)
    return out


def _times(ctx: MappingContext, obr: Segment, body: Json) -> None:
    effective = fhir_datetime(obr.get(7), ctx.tz)
    if effective:
        body["effectiveDateTime"] = effective
    issued = fhir_instant(obr.get(22), ctx.tz)
    if issued:
        body["issued"] = issued


def _observations(
    ctx: MappingContext, group: Group, order: str, at: tuple[int, object], specimens: list[Json]
) -> list[tuple[str, str]]:
    seen: set[tuple[str, ...]] = set()
    out = []
    fallback = group.obr.get(25) if group.obr is not None else ""
    previous: Json | None = None
    for position, (obx, notes) in enumerate(group.obx, 1):
        if previous is not None and _continues(obx, previous):
            previous["valueString"] += "\n" + obx.get(5)
            continue
        key = _obx_key(obx, seen, position)
        rid = identity.resource_id("Observation", order, *key)
        status = observation_status(obx.get(11), observation_status(fallback))
        body = observation_body(ctx, obx, notes, status, group.obr)
        if specimens:
            body["specimen"] = specimens[0]
        mapped = ctx.emit("Observation", rid, body, f"observation.{status}",
                          at, STATUS_RANK.get(status, 0))  # type: ignore[arg-type]
        out.append((rid, status))
        previous = mapped.resource
    return out


def _continues(obx: Segment, previous: Json) -> bool:
    """A text OBX without OBX-3 after a text OBX is a continuation line of that text."""
    return (not obx.field(3).strip() and obx.get(2).strip().upper() in ("TX", "FT", "ST")
            and bool(obx.get(5).strip()) and "valueString" in previous)


def _obx_key(obx: Segment, seen: set[tuple[str, ...]], position: int) -> tuple[str, ...]:
    """OBX-3 code + OBX-4 sub-id; the set id (then the position) only to break a clash."""
    code = (obx.get(3, 1, 3).strip(), obx.get(3, 1, 1).strip(), obx.get(4).strip())
    for key in (code, (*code, obx.get(1).strip()), (*code, obx.get(1).strip(), str(position))):
        if key not in seen:
            seen.add(key)
            return key
    return (*code, str(position))


def observation_body(ctx: MappingContext, obx: Segment, notes: list[Segment], status: str,
                     obr: Segment | None) -> Json:
    # OBX-3 is required in v2, but real feeds omit it; the value is kept and the code is
    # marked absent (FHIR's data-absent-reason) rather than dead-lettering the whole report.
    code = codeable(obx, 3, 1, ctx.site) or _ABSENT_CODE
    body: Json = {"status": status, "code": code}
    if ctx.patient_ref:
        body["subject"] = ctx.patient_ref
    effective = fhir_datetime(obx.get(14), ctx.tz) or (
        fhir_datetime(obr.get(7), ctx.tz) if obr is not None else None)
    if effective:
        body["effectiveDateTime"] = effective
    issued = fhir_instant(obr.get(22), ctx.tz) if obr is not None else None
    if issued:
        body["issued"] = issued
    body.update(value(obx, ctx.site))
    for key, val in (("interpretation", interpretations(obx)),
                     ("referenceRange", reference_range(obx, ctx.site)),
                     ("method", codeable(obx, 17, 1, ctx.site)),
                     ("bodySite", codeable(obx, 20, 1, ctx.site))):
        if val:
            body[key] = val
    texts = ["\n".join(n.get(3, r) for r in range(1, len(n.repetitions(3)) + 1))
             for n in notes]
    if any(texts):
        body["note"] = [{"text": t} for t in texts if t]
    return body


def _specimen(ctx: MappingContext, spm: Segment, order: str, n: int) -> str:
    ident = None
    for comp in (2, 1):  # filler-assigned, then placer-assigned specimen id
        number = spm.get(2, 1, comp, 1).strip()
        if number:
            scope = hd_system(spm.get(2, 1, comp, 2).strip(), spm.get(2, 1, comp, 3).strip(),
                              spm.get(2, 1, comp, 4).strip(), ctx.site.identifier_systems)
            ident = {"value": number, **({"system": scope} if scope else {})}
            identity_key: tuple[str, ...] = (scope or f"facility:{ctx.facility}", number)
            break
    else:
        identity_key = (order, spm.get(1).strip(), str(n))
    rid = identity.resource_id("Specimen", *identity_key)
    body: Json = {}
    if ident:
        body["identifier"] = [ident]
    kind = codeable(spm, 4, 1, ctx.site)
    if kind:
        body["type"] = kind
    if ctx.patient_ref:
        body["subject"] = ctx.patient_ref
    collected = fhir_datetime(spm.get(17, 1, 1), ctx.tz)
    if collected:
        body["collection"] = {"collectedDateTime": collected}
    received = fhir_datetime(spm.get(18), ctx.tz)
    if received:
        body["receivedTime"] = received
    ctx.emit("Specimen", rid, body, "specimen.upserted", ctx.when(*_status_times(ctx, None)))
    return rid


def map_supporting_observations(ctx: MappingContext, scope: str) -> None:
    """OBX outside a result report (ADT, SIU, ORM, DFT, VXU): Observations about the
    patient, identified by the patient, code, sub-id and observation time."""
    seen: set[tuple[str, ...]] = set()
    notes: list[Segment] = []
    pending: list[tuple[Segment, list[Segment]]] = []
    for seg in ctx.msg.segments:
        if seg.id == "OBX":
            notes = []
            pending.append((seg, notes))
        elif seg.id == "NTE" and pending:
            notes.append(seg)
    for position, (obx, obx_notes) in enumerate(pending, 1):
        key = _obx_key(obx, seen, position)
        when = obx.get(14).strip() or f"{ctx.sender}|{ctx.msg.control_id}"
        rid = identity.resource_id("Observation", scope, ctx.patient_id, when, *key)
        status = observation_status(obx.get(11))
        body = observation_body(ctx, obx, obx_notes, status, None)
        ctx.emit("Observation", rid, body, f"observation.{status}", ctx.when(),
                 STATUS_RANK.get(status, 0))
