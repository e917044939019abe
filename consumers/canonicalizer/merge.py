"""ADT A40 (merge patient), A34 (merge patient id) and A39 (merge person) -> merge events.

For each PID/MRG pair: a ``patient.merged`` event carrying the surviving Patient with a
``replaces`` link to the retired one, and a ``patient.retired`` event carrying the retired
Patient (``active: false``, ``replaced-by`` link), keyed by the retired patient so it stays
ordered after that patient's earlier events.
"""

from __future__ import annotations

from fhirbus.hl7 import Segment

from . import identity
from .context import MappingContext
from .datatypes import identifier
from .errors import MissingRequiredField, MissingRequiredSegment
from .patient import _scope, patient_body, patient_key

MERGE_TRIGGERS = frozenset({"A34", "A39", "A40"})


def map_merge(ctx: MappingContext) -> None:
    pairs = _pairs(ctx)
    if not pairs:
        raise MissingRequiredSegment("MRG")
    evn = ctx.msg.segment("EVN")
    at = ctx.when(evn.get(2) if evn else "")
    for pid, mrg in pairs:
        _merge_one(ctx, pid, mrg, at)


def _pairs(ctx: MappingContext) -> list[tuple[Segment, Segment]]:
    pairs: list[tuple[Segment, Segment]] = []
    pid: Segment | None = None
    for seg in ctx.msg.segments:
        if seg.id == "PID":
            pid = seg
        elif seg.id == "MRG" and pid is not None:
            pairs.append((pid, seg))
            pid = None
    return pairs


def retired_key(ctx: MappingContext, mrg: Segment) -> str:
    """MRG-1 (prior patient identifier list), MR-typed repetition first."""
    reps = mrg.repetitions(1)
    order = sorted(range(1, len(reps) + 1), key=lambda r: mrg.get(1, r, 5) != "MR")
    for rep in order:
        value = mrg.get(1, rep, 1).strip()
        if value:
            return identity.resource_id("Patient", _scope(ctx, mrg, 1, rep), value)
    raise MissingRequiredField("MRG-1", "no prior patient identifier")


def _merge_one(ctx: MappingContext, pid: Segment, mrg: Segment, at: tuple[int, object]) -> None:
    survivor = patient_key(ctx, pid)
    retired = retired_key(ctx, mrg)
    ctx.patient_id = survivor
    body = patient_body(ctx, pid)
    body["link"] = [{"other": {"reference": f"Patient/{retired}"}, "type": "replaces"}]
    merged = ctx.emit("Patient", survivor, body, "patient.merged", at)  # type: ignore[arg-type]
    old_ids = [
        i for rep in range(1, len(mrg.repetitions(1)) + 1)
        if (i := identifier(mrg, 1, rep, ctx.site.identifier_systems))
    ]
    old = {
        "identifier": old_ids,
        "active": False,
        "link": [{"other": {"reference": f"Patient/{survivor}"}, "type": "replaced-by"}],
    }
    retired_event = ctx.emit("Patient", retired, old, "patient.retired", at,  # type: ignore[arg-type]
                             subject_key=retired)
    retired_event.causation_of = ctx.out.index(merged)
