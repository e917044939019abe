"""MDM^T02/T04/T06/T08 -> DocumentReference (TXA + the OBX content)."""

from __future__ import annotations

import base64

from fhirbus.hl7 import Segment

from . import identity
from .context import MappingContext
from .datatypes import Json, codeable, fhir_instant, hd_system
from .errors import MissingRequiredSegment
from .observation import _is_base64, _mime
from .patient import map_patient, require_pid

# trigger -> event action
MDM_TRIGGERS: dict[str, str] = {"T02": "created", "T04": "status-changed",
                                "T06": "addended", "T08": "edited"}
# TXA-17 completion status (table 0271) -> DocumentReference.docStatus.
_DOC_STATUS = {"AU": "final", "LA": "final", "DO": "final", "DI": "preliminary",
               "IN": "preliminary", "IP": "preliminary", "PA": "preliminary"}
_TEXT = frozenset({"TX", "FT", "ST", "CE", "CWE"})


def map_mdm(ctx: MappingContext) -> None:
    txa = ctx.msg.segment("TXA")
    if txa is None:
        raise MissingRequiredSegment("TXA")
    map_patient(ctx, require_pid(ctx))
    content = _content(ctx)
    if not content:
        raise MissingRequiredSegment("OBX", "document has no content")
    action = MDM_TRIGGERS[ctx.msg.trigger.strip().upper()]
    canceled = txa.get(19).strip().upper() == "CA" or txa.get(17).strip().upper() == "CA"
    body: Json = {"status": "entered-in-error" if canceled else "current"}
    master = _ident(ctx, txa, 12)
    if master:
        body["masterIdentifier"] = master
    others = [i for n in (14, 15) if (i := _ident(ctx, txa, n))]
    if others:
        body["identifier"] = others
    doc_status = _DOC_STATUS.get(txa.get(17).strip().upper())
    if doc_status:
        body["docStatus"] = doc_status
    kind = codeable(txa, 2, 1, ctx.site)
    if kind:
        body["type"] = kind
    body["subject"] = ctx.patient_ref
    date = fhir_instant(txa.get(4), ctx.tz) or fhir_instant(txa.get(6), ctx.tz)
    if date:
        body["date"] = date
    authors = [a for r in range(1, len(txa.repetitions(9)) + 1) if (a := _person(txa, 9, r))]
    if authors:
        body["author"] = authors
    body["content"] = content
    rid = identity.resource_id("DocumentReference", _key(ctx, txa))
    rank = {"preliminary": 0, "final": 1}.get(doc_status or "", 0) + (3 if canceled else 0)
    at = ctx.when(txa.get(8) if action == "edited" else "")
    ctx.emit("DocumentReference", rid, body, f"documentreference.{action}", at, rank)


def _ident(ctx: MappingContext, txa: Segment, n: int) -> Json | None:
    value = txa.get(n, 1, 1).strip()
    if not value:
        return None
    system = hd_system(txa.get(n, 1, 2).strip(), txa.get(n, 1, 3).strip(),
                       txa.get(n, 1, 4).strip(), ctx.site.identifier_systems)
    return {"value": value, **({"system": system} if system else {})}


def _key(ctx: MappingContext, txa: Segment) -> str:
    for n in (12, 14, 15):
        value = txa.get(n, 1, 1).strip()
        if value:
            return f"{n}|{txa.get(n, 1, 2).strip() or ctx.facility}|{value}"
    return f"message|{ctx.sender}|{ctx.msg.control_id}"


def _person(seg: Segment, n: int, rep: int) -> Json | None:
    c = [x.strip() for x in seg.components(n, rep)] + [""] * 3
    name = " ".join(p for p in (c[2], c[1].split("&")[0]) if p) or c[0]
    return {"display": name} if name else None


def _content(ctx: MappingContext) -> list[Json]:
    """Text OBX lines become one text/plain attachment; each ED OBX its own attachment."""
    lines: list[str] = []
    out: list[Json] = []
    for obx in ctx.msg.all("OBX"):
        kind = obx.get(2).strip().upper()
        if kind == "ED":
            mime = _mime(obx.get(5, 1, 2), obx.get(5, 1, 3))
            data = obx.get(5, 1, 5).strip()
            att: Json = {"contentType": mime} if mime else {}
            if obx.get(5, 1, 4).strip().upper() == "BASE64" and _is_base64(data):
                att["data"] = data
            if att:
                out.append({"attachment": att})
        elif kind in _TEXT or not kind:
            lines.extend(obx.get(5, r) for r in range(1, len(obx.repetitions(5)) + 1))
    if any(line.strip() for line in lines):
        text = "\n".join(lines).encode("utf-8")
        out.insert(0, {"attachment": {"contentType": "text/plain; charset=utf-8",
                                      "data": base64.b64encode(text).decode("ascii")}})
    return out
