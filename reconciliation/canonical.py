"""Checks over Kafka: canonical topics against each projection, and the raw HL7 topic
against the canonical output.

* canonical -> projection: every event at the highest version of each resource is projected
  with the projection's own pure ``project``; per row the effect the projection itself keeps
  (highest version, then the effect's ``event_id``) states the expected version and values.
  The effect's event id, not the event's: a projection may keep a token of it (analytics
  keeps an HMAC), whose order differs from the raw ids', so the raw order would pick the
  other event of a version tie (two messages stating one resource at one version).
* raw HL7 -> canonical: every raw record the canonicalizer has committed past must be
  named by some canonical event's provenance or by a dead-letter record's headers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from fhirbus.consumers import deadletter as dl
from fhirbus.projections import positions as pos
from fhirbus.projections.core import Projection, Versioned
from fhirbus.projections.migrations import prefix
from fhirbus.projections.store import Store
from fhirbus.schemas.envelope import CanonicalEvent
from fhirbus.schemas.serde import EnvelopeSerde
from fhirbus.schemas.topics import RAW_HL7, dead_letter_topic
from fhirbus.settings import Settings

from . import topics as kt
from .diff import Fingerprint, KeyDiff, classify


@dataclass(frozen=True)
class Located:
    """An event and where it was read, for provenance and for replaying it later."""

    event: CanonicalEvent
    topic: str
    partition: int
    offset: int

    def provenance(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset,
                "event_id": self.event.event_id}


class CanonicalIndex:
    """Every event at the highest version of each resource, read once per run."""

    def __init__(self, settings: Settings, serde: EnvelopeSerde) -> None:
        self.settings = settings
        self.serde = serde
        # Usually one event; more when messages tie on a version (kept in arrival order).
        self.latest: dict[tuple[str, str], list[Located]] = {}
        self.raw_refs: set[tuple[str, int, int]] = set()
        self._read: set[str] = set()

    def load(self, topics: Iterable[str]) -> None:
        for topic in topics:
            if topic in self._read:
                continue
            self._read.add(topic)
            for msg in kt.scan(self.settings, topic):
                if msg.value() is None:
                    continue
                self.add(Located(self.serde.deserialize(msg.value(), topic), topic,
                                 msg.partition(), msg.offset()))

    def add(self, at: Located) -> None:
        e = at.event
        s = e.source
        if s.raw_topic is not None and s.raw_partition is not None and s.raw_offset is not None:
            self.raw_refs.add((s.raw_topic, s.raw_partition, s.raw_offset))
        key = (e.resource_type, e.resource_id)
        known = self.latest.get(key)
        if known is None or e.resource_version > known[0].event.resource_version:
            self.latest[key] = [at]
        elif e.resource_version == known[0].event.resource_version and all(
                k.event.event_id != e.event_id for k in known):
            known.append(at)  # a repeat (a repair re-publish) keeps its first position

    def resources(self, topics: Iterable[str]) -> int:
        wanted = set(topics)
        return sum(1 for ats in self.latest.values() if ats[0].topic in wanted)


def values_digest(values: Iterable[Any]) -> str:
    norm = [int(v) if isinstance(v, bool) else v for v in values]
    return hashlib.md5(orjson.dumps(norm)).hexdigest()


def expected_rows(projection: Projection, index: CanonicalIndex
                  ) -> dict[str, dict[str, tuple[Fingerprint, Located]]]:
    """table -> key -> ((version, digest of event id + values), the event), for the row the
    projection keeps from the latest events of every resource on its topics: the effect
    with the highest (version, effect event id), the rule ``core.apply_versioned`` applies."""
    best: dict[str, dict[str, tuple[tuple[int, str], Versioned, Located]]] = {}
    topics = set(projection.topics)
    for ats in index.latest.values():
        if ats[0].topic not in topics:
            continue
        for at in ats:
            for effect in projection.project(at.event):
                if not isinstance(effect, Versioned):
                    continue
                rows = best.setdefault(effect.table, {})
                rank = (effect.version, effect.event_id)
                known = rows.get(effect.key)
                if known is None or rank > known[0]:
                    rows[effect.key] = (rank, effect, at)
    return {table: {key: ((e.version, values_digest((e.event_id, *e.values))), at)
                    for key, (_, e, at) in rows.items()}
            for table, rows in best.items()}


def actual_rows(store: Store, projection: Projection) -> dict[str, dict[str, Fingerprint]]:
    with store.transaction(lock=False) as tx:
        gen = pos.active(tx, projection.name)
        if gen is None:
            return {t.name: {} for t in projection.tables}
        p = prefix(projection.name, gen)
        out: dict[str, dict[str, Fingerprint]] = {}
        for spec in projection.tables:
            cols = ", ".join(spec.columns)
            out[spec.name] = {
                row[0]: (int(row[1]), values_digest(row[2:]))
                for row in tx.execute(f"SELECT id, version, event_id, {cols} FROM {p}{spec.name}")
            }
        return out


def compare_projection(projection: Projection, store: Store, index: CanonicalIndex
                       ) -> list[tuple[str, KeyDiff, Located | None]]:
    """(table, difference, the event that states the expected row) for every drifted row."""
    expected = expected_rows(projection, index)
    actual = actual_rows(store, projection)
    out: list[tuple[str, KeyDiff, Located | None]] = []
    for table in sorted(expected.keys() | actual.keys()):
        exp = expected.get(table, {})
        for d in classify({k: fp for k, (fp, _) in exp.items()}, actual.get(table, {})):
            out.append((table, d, exp[d.key][1] if d.key in exp else None))
    return out


def dead_lettered(settings: Settings, stage: str = "canonicalizer") -> set[tuple[str, int, int]]:
    """(topic, partition, offset) of every record the stage dead-lettered."""
    refs: set[tuple[str, int, int]] = set()
    for msg in kt.scan(settings, dead_letter_topic(stage)):
        h = {k: (v or b"").decode() for k, v in msg.headers() or []}
        try:
            refs.add((h[dl.H_TOPIC], int(h[dl.H_PARTITION]), int(h[dl.H_OFFSET])))
        except (KeyError, ValueError):
            continue  # not a dead-letter record of ours; H4's tooling reports those
    return refs


def unaccounted_raw(settings: Settings, index: CanonicalIndex, group: str,
                    topic: str = RAW_HL7) -> tuple[list[Any], int]:
    """(raw records below the canonicalizer's committed offsets that produced neither a
    canonical event nor a dead-letter record, how many raw records were looked at)."""
    done = kt.committed(settings, group, topic)
    accounted = index.raw_refs | dead_lettered(settings)
    missing, seen = [], 0
    for msg in kt.scan(settings, topic, stops=done):
        seen += 1
        if (topic, msg.partition(), msg.offset()) not in accounted:
            missing.append(msg)
    return missing, seen
