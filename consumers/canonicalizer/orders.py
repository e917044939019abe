"""ORM^O01 and OML^O21/O33/O35 -> ServiceRequest per order (ORC with its OBR, or a bare OBR).

ORC-1 is the order control: NW places, CA/OC/DC/CR/OD cancel or discontinue (status
``revoked``, event ``servicerequest.cancelled``), HD holds, SC/RE take the state from ORC-5.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fhirbus.hl7 import Segment

from . import identity
from .context import MappingContext
from .datatypes import Json, codeable, entity_identifier, fhir_datetime, hd_system
from .oru import map_supporting_observations
from .patient import map_patient, require_pid

ORDER_TYPES = frozenset({("ORM", "O01"), ("OML", "O21"), ("OML", "O33"), ("OML", "O35")})

# ORC-1 order control (table 0119) -> (status, event action, rank).
_CONTROL = {
    "NW": ("active", "placed", 0), "RL": ("active", "released", 1),
    "XO": ("active", "updated", 1), "XX": ("active", "updated", 1),
    "HD": ("on-hold", "on-hold", 2), "OH": ("on-hold", "on-hold", 2),
    "CA": ("revoked", "cancelled", 4), "OC": ("revoked", "cancelled", 4),
    "CR": ("revoked", "cancelled", 4), "DC": ("revoked", "cancelled", 4),
    "OD": ("revoked", "cancelled", 4), "DR": ("revoked", "cancelled", 4),
}
# ORC-5 order status (table 0038) -> (status, event action, rank), for SC/RE/empty ORC-1.
_ORDER_STATUS = {
    "A": ("active", "updated", 1), "IP": ("active", "updated", 1),
    "SC": ("active", "updated", 1), "CM": ("completed", "completed", 3),
    "CA": ("revoked", "cancelled", 4), "DC": ("revoked", "cancelled", 4),
    "ER": ("entered-in-error", "entered-in-error", 5), "HD": ("on-hold", "on-hold", 2),
    "RP": ("active", "updated", 1),
}
_PRIORITY = {"S": "stat", "A": "asap", "R": "routine", "P": "urgent", "T": "urgent"}


@dataclass
class Order:
    orc: Segment | None
    obr: Segment | None = None
    notes: list[Segment] = field(default_factory=list)


def orders(segments: list[Segment]) -> list[Order]:
    out: list[Order] = []
    current: Order | None = None
    in_order_notes = False  # NTE right after OBR are order notes; after OBX they are not
    for seg in segments:
        if seg.id == "ORC":
            current, in_order_notes = Order(seg), False
            out.append(current)
        elif seg.id == "OBR":
            if current is None or current.obr is not None:
                current = Order(None)
                out.append(current)
            current.obr, in_order_notes = seg, True
        elif seg.id == "NTE" and current is not None and in_order_notes:
            current.notes.append(seg)
        elif seg.id != "NTE":
            in_order_notes = False
    return out


def map_orders(ctx: MappingContext) -> None:
    map_patient(ctx, require_pid(ctx))
    for index, order in enumerate(orders(ctx.msg.segments), 1):
        _service_request(ctx, order, index)
    map_supporting_observations(ctx, "order")


def order_key(ctx: MappingContext, order: Order, index: int) -> str:
    """Placer order number first (the order's own identity), then the filler number."""
    for n in (2, 3):
        for seg in (order.orc, order.obr):
            number = seg.get(n, 1, 1).strip() if seg is not None else ""
            if number and seg is not None:
                scope = hd_system(seg.get(n, 1, 2).strip(), seg.get(n, 1, 3).strip(),
                                  seg.get(n, 1, 4).strip(), ctx.site.identifier_systems)
                return f"{'placer' if n == 2 else 'filler'}|{scope or ctx.facility}|{number}"
    return f"message|{ctx.sender}|{ctx.msg.control_id}|{index}"


def _state(order: Order) -> tuple[str, str, int]:
    orc = order.orc
    control = orc.get(1).strip().upper() if orc is not None else ""
    if control in _CONTROL:
        return _CONTROL[control]
    status = orc.get(5).strip().upper() if orc is not None else ""
    return _ORDER_STATUS.get(status, ("active", "updated" if control else "placed", 1))


def _service_request(ctx: MappingContext, order: Order, index: int) -> None:
    status, action, rank = _state(order)
    body: Json = {"status": status, "intent": "order"}
    idents = _identifiers(ctx, order)
    if idents:
        body["identifier"] = idents
    obr, orc = order.obr, order.orc
    if orc is not None and orc.get(4).strip():
        body["requisition"] = {"value": orc.get(4).strip()}
    code = codeable(obr, 4, 1, ctx.site) if obr is not None else None
    if code:
        body["code"] = code
    priority = _PRIORITY.get((obr.get(5) if obr is not None else "").strip().upper())
    if priority:
        body["priority"] = priority
    body["subject"] = ctx.patient_ref
    when = fhir_datetime(obr.get(7), ctx.tz) if obr is not None else None
    if when:
        body["occurrenceDateTime"] = when
    authored = fhir_datetime(orc.get(9), ctx.tz) if orc is not None else None
    if authored:
        body["authoredOn"] = authored
    reasons = [c for r in range(1, len(obr.repetitions(31)) + 1)
               if (c := codeable(obr, 31, r, ctx.site))] if obr else []
    if reasons:
        body["reasonCode"] = reasons
    notes = [n.get(3) for n in order.notes if n.get(3).strip()]
    if notes:
        body["note"] = [{"text": t} for t in notes]
    rid = identity.resource_id("ServiceRequest", order_key(ctx, order, index))
    at = ctx.when(orc.get(9) if orc is not None else "")
    ctx.emit("ServiceRequest", rid, body, f"servicerequest.{action}", at, rank)


def _identifiers(ctx: MappingContext, order: Order) -> list[Json]:
    out: list[Json] = []
    for n, code in ((2, "PLAC"), (3, "FILL")):
        for seg in (order.orc, order.obr):
            ident = entity_identifier(seg, n, ctx.site.identifier_systems) if seg else None
            if ident:
                ident["type"] = {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": code}]}
                out.append(ident)
                break
    return out
