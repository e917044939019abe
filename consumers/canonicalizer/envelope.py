"""Mapped resources -> CanonicalEvent envelopes with provenance back to the raw bytes."""

from __future__ import annotations

import dataclasses

import orjson

from fhirbus.schemas.envelope import CanonicalEvent, Source

from . import identity
from .context import Mapped, MappingContext


def to_events(ctx: MappingContext, mapped: list[Mapped]) -> list[CanonicalEvent]:
    ref = ctx.ref
    source = Source(
        kind="hl7v2",
        system=ctx.sender,
        feed=ref.feed,
        message_control_id=ctx.msg.control_id or None,
        message_type=_message_type(ctx),
        raw_topic=ref.topic,
        raw_partition=ref.partition,
        raw_offset=ref.offset,
    )
    correlation = identity.correlation_id(ref.feed, ctx.sender, ctx.msg.control_id, ctx.index)
    if not ctx.msg.control_id:
        # No MSH-10: the raw position is the only identity this message has.
        correlation = identity.correlation_id(
            ref.feed, ctx.sender, f"{ref.topic}/{ref.partition}/{ref.offset}", ctx.index)
    events: list[CanonicalEvent] = []
    for m in mapped:
        rid = m.resource["id"]
        causation = events[m.causation_of].event_id if m.causation_of is not None else None
        events.append(CanonicalEvent(
            event_id=identity.event_id(m.resource_type, rid, m.version, m.event_type,
                                       correlation),
            event_type=m.event_type,
            resource_type=m.resource_type,
            resource_id=rid,
            resource_version=m.version,
            occurred_at=m.occurred_at,
            recorded_at=ref.received_at,
            source=source,
            mapping_version=ctx.mapping_version,
            resource=orjson.dumps(m.resource),
            subject_key=m.subject_key or rid,
            correlation_id=correlation,
            causation_id=causation,
        ))
    return events


def _message_type(ctx: MappingContext) -> str | None:
    parts = [ctx.msh.get(9, 1, c).strip() for c in (1, 2, 3)]
    text = "^".join(parts).rstrip("^")
    return text or None


def with_revision(event: CanonicalEvent, revision: int) -> CanonicalEvent:
    """The same source state re-mapped with different content (replay after a mapping fix)."""
    if not 0 <= revision <= identity.MAX_REVISION:
        raise ValueError("revision out of range")
    version = identity.base_version(event.resource_version) + revision
    return dataclasses.replace(
        event,
        resource_version=version,
        event_id=identity.event_id(event.resource_type, event.resource_id, version,
                                   event.event_type, event.correlation_id or ""),
    )
