"""The pure core: ``map_message(raw, ref, site) -> list[CanonicalEvent]``.

No Kafka, SQL or socket here: parse (batch-aware), route on MSH-9, map, apply the feed's
site rules, validate every resource with fhir.resources, wrap each in the envelope.
Any failure raises a MappingError subclass (a PermanentError) naming reason and path.
"""

from __future__ import annotations

from fhirbus.hl7 import HL7EncodingError, HL7ParseError, Message, parse_bytes, split_batch
from fhirbus.schemas.envelope import CanonicalEvent

from .context import Mapped, MappingContext, RawRef
from .customize import apply_site_rules
from .envelope import to_events
from .errors import EmptyBatch, ParseFailure
from .router import route
from .site import SiteConfig
from .validate import validate


def parse_messages(raw: bytes) -> list[Message]:
    try:
        parts = split_batch(raw)
        if not parts:
            raise EmptyBatch("FHS", "batch envelope holds no message")
        return [parse_bytes(part) for part in parts]
    except HL7ParseError as exc:
        where = f"segment[{exc.segment_index}]" if exc.segment_index else "message"
        raise ParseFailure(where, exc.reason) from None
    except HL7EncodingError as exc:
        raise ParseFailure("MSH-18", exc.reason) from None


def map_message(raw: bytes, ref: RawRef, site: SiteConfig) -> list[CanonicalEvent]:
    """Every canonical event one raw record yields, in message order. All or nothing: a
    record whose any part fails is dead-lettered whole (its raw bytes are one unit)."""
    feed = site.for_feed(ref.feed)
    events: list[CanonicalEvent] = []
    for index, msg in enumerate(parse_messages(raw)):
        ctx = MappingContext(msg, ref, feed, index)
        route(ctx)(ctx)
        apply_site_rules(ctx)
        mapped = _last_state_wins(ctx.out)
        for m in mapped:
            validate(m.resource)
        events.extend(to_events(ctx, mapped))
    return events


def _last_state_wins(out: list[Mapped]) -> list[Mapped]:
    """One event per resource id per message: a resource stated twice in one message (the
    same specimen under two orders) keeps its last statement, at its first position."""
    keys = [(m.resource_type, m.resource["id"]) for m in out]
    if len(set(keys)) == len(out):
        return out
    last = dict(zip(keys, out, strict=True))
    kept = [last[k] for k in dict.fromkeys(keys)]
    # causation_of indexes the old list; merge events are never stated twice, so remap.
    position = {id(m): i for i, m in enumerate(kept)}
    for m in kept:
        if m.causation_of is not None:
            m.causation_of = position.get(id(out[m.causation_of]))
    return kept
