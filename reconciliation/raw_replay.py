"""Repair of raw-HL7 drift: re-run the canonicalizer's replay (``fhirbus replay raw``) over
the raw records that produced nothing, grouped per feed and partition. Replay compares with
what was published before, so records in the range that did produce events are no-ops."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from fhirbus.consumers.canonicalizer import SiteConfig
from fhirbus.consumers.canonicalizer.replay import Position, ReplayReport, replay_raw
from fhirbus.settings import Settings


def replay_records(settings: Settings, messages: list[Any],
                   site: SiteConfig | None = None) -> list[ReplayReport]:
    """``site``: the site configuration the canonicalizer runs with (default: none)."""
    spans: dict[tuple[str, str, int], list[int]] = defaultdict(list)
    for msg in messages:
        feed = (msg.key() or b"").decode("utf-8", "replace")
        spans[(msg.topic(), feed, msg.partition())].append(msg.offset())
    site = site or SiteConfig()
    return [
        replay_raw(settings, site, feed=feed, topic=topic,
                   start=Position(offset=min(offsets), partition=part),
                   end=Position(offset=max(offsets), partition=part))
        for (topic, feed, part), offsets in sorted(spans.items())
    ]
