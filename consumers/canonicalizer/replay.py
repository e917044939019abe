"""``fhirbus replay raw``: re-run the canonicalizer over a range of the raw topic.

Use after a mapping fix or a site-config change. Ids and source versions are deterministic,
so each re-mapped resource lands on the same (resource id, source version) it had before;
its content is then compared with the latest published revision of that version:

* unchanged content (ignoring ``meta``, which carries the mapping version) -> not
  republished: a no-op downstream;
* changed content -> republished as revision + 1 of that version (``resource_version``
  grows by one, new ``event_id``), so it arrives downstream as a new version;
* never published before (e.g. it had been dead-lettered) -> published as mapped.

The planning step (``plan``) is pure; reading Kafka and publishing sit around it.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from confluent_kafka import Consumer, TopicPartition

from fhirbus.consumers.records import Record
from fhirbus.kafka.config import consumer_config, producer_config, resolve_registry_url
from fhirbus.kafka.producer import Producer
from fhirbus.schemas.envelope import CanonicalEvent
from fhirbus.schemas.serde import EnvelopeSerde, registry_client
from fhirbus.schemas.topics import RAW_HL7, canonical_topic
from fhirbus.settings import ConfigError, Settings

from .app import Canonicalizer
from .context import RawRef
from .envelope import with_revision
from .errors import MappingError
from .identity import MAX_REVISION, base_version, revision_of
from .mapper import map_message
from .site import SiteConfig

_POSITION = re.compile(r"^(?:(\d+):)?(\d+)$")


@dataclass(frozen=True)
class Position:
    """A point in the raw topic: a time, an offset on every partition, or partition:offset."""

    time: datetime | None = None
    offset: int | None = None
    partition: int | None = None


def parse_position(text: str) -> Position:
    match = _POSITION.match(text.strip())
    if match:
        part, offset = match.groups()
        return Position(offset=int(offset), partition=int(part) if part else None)
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            "--from/--to: expected an ISO-8601 time, an offset, or PARTITION:OFFSET"
        ) from None
    return Position(time=when if when.tzinfo else when.replace(tzinfo=UTC))


def content_hash(resource: bytes) -> str:
    """Digest of a resource's content without ``meta`` (mapping version, provenance)."""
    doc = orjson.loads(resource)
    doc.pop("meta", None)
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass
class Prior:
    revision: int
    digest: str


PriorIndex = dict[tuple[str, str, int], Prior]


def index_key(event: CanonicalEvent) -> tuple[str, str, int]:
    return (event.resource_type, event.resource_id, base_version(event.resource_version))


def remember(index: PriorIndex, event: CanonicalEvent) -> None:
    key, rev = index_key(event), revision_of(event.resource_version)
    known = index.get(key)
    if known is None or rev >= known.revision:
        index[key] = Prior(rev, content_hash(event.resource))


def plan(events: Iterable[CanonicalEvent], prior: PriorIndex) -> tuple[list[CanonicalEvent], int]:
    """(events to publish, count of unchanged ones). Updates ``prior`` as it goes, so a
    resource re-stated later in the same range compares against what this replay sent."""
    out: list[CanonicalEvent] = []
    unchanged = 0
    for event in events:
        key = index_key(event)
        digest = content_hash(event.resource)
        known = prior.get(key)
        if known is not None and known.digest == digest:
            unchanged += 1
            continue
        revision = 0 if known is None else known.revision + 1
        if revision > MAX_REVISION:
            raise RuntimeError("more than 99 replay revisions of one source version")
        out.append(with_revision(event, revision) if revision else event)
        prior[key] = Prior(revision, digest)
    return out, unchanged


@dataclass
class ReplayReport:
    records: int = 0
    events: int = 0
    unchanged: int = 0
    published: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        failed = ", ".join(f"{k}={v}" for k, v in sorted(self.failed.items())) or "none"
        types = ", ".join(f"{k}={v}" for k, v in sorted(self.by_type.items())) or "none"
        return (f"replayed {self.records} raw record(s): {self.events} event(s) mapped, "
                f"{self.unchanged} unchanged (not republished), {self.published} new "
                f"version(s) published [{types}]; failed: {failed}")


def replay_raw(
    settings: Settings,
    site: SiteConfig,
    *,
    feed: str,
    start: Position,
    end: Position | None = None,
    topic: str = RAW_HL7,
    dry_run: bool = False,
) -> ReplayReport:
    report = ReplayReport()
    events: list[CanonicalEvent] = []
    for record in read_raw_range(settings, topic, feed, start, end):
        report.records += 1
        try:
            events.extend(map_message(record.raw or b"", RawRef.from_record(record), site))
        except MappingError as exc:
            report.failed[exc.reason] += 1  # already dead-lettered by the live stage
    report.events = len(events)
    serde = EnvelopeSerde(registry_client(resolve_registry_url(settings)))
    prior = load_prior(settings, serde, {e.resource_type for e in events})
    publish, report.unchanged = plan(events, prior)
    report.by_type.update(e.resource_type for e in publish)
    if not dry_run and publish:
        _publish(settings, serde, site, publish)
    report.published = len(publish)
    return report


def _publish(settings: Settings, serde: EnvelopeSerde, site: SiteConfig,
             events: list[CanonicalEvent]) -> None:
    handler = Canonicalizer(site, serde)
    producer = Producer(producer_config(settings))
    futures = []
    for event in events:
        p = handler.publish(event)
        futures.append(producer.send(p.topic, p.value, p.key, p.headers))
    for future in futures:
        future.result(timeout=60)  # raises DeliveryError: the operator reruns the replay
    producer.flush(30)


def _consumer(settings: Settings) -> Consumer:
    return Consumer(consumer_config(settings, f"fhirbus-replay-{uuid.uuid4().hex[:12]}",
                                    **{"enable.partition.eof": True}))


def _scan(consumer: Consumer, stops: dict[int, int], topic: str) -> Iterable[object]:
    """Every message of the assigned partitions until each reaches its stop offset."""
    pending = {p for p, stop in stops.items() if stop > 0}
    deadline = time.monotonic() + 300
    while pending and time.monotonic() < deadline:
        for msg in consumer.consume(500, 0.5):
            if msg.error() is not None:
                continue
            if msg.offset() + 1 >= stops[msg.partition()]:
                pending.discard(msg.partition())
            if msg.offset() < stops[msg.partition()]:
                yield msg


def _starts(consumer: Consumer, topic: str, parts: list[int], start: Position) -> dict[int, int]:
    if start.time is not None:
        ms = int(start.time.timestamp() * 1000)
        found = consumer.offsets_for_times([TopicPartition(topic, p, ms) for p in parts], 10)
        return {tp.partition: tp.offset for tp in found}
    return {p: start.offset or 0 for p in parts if start.partition in (None, p)}


def read_raw_range(settings: Settings, topic: str, feed: str, start: Position,
                   end: Position | None) -> Iterable[Record]:
    consumer = _consumer(settings)
    try:
        parts = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        starts = {p: o for p, o in _starts(consumer, topic, parts, start).items() if o >= 0}
        stops = {}
        for p in starts:
            high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            stop = high
            if end is not None and end.offset is not None and end.partition in (None, p):
                stop = min(high, end.offset + 1)
            stops[p] = stop
        consumer.assign([TopicPartition(topic, p, o) for p, o in starts.items()])
        end_ms = int(end.time.timestamp() * 1000) if end is not None and end.time else None
        for msg in _scan(consumer, stops, topic):
            record = Record(msg, msg.value())  # type: ignore[attr-defined]
            if end_ms is not None and record.timestamp_ms > end_ms:
                continue
            if (record.key or b"").decode("utf-8", "replace") == feed:
                yield record
    finally:
        consumer.close()


def load_prior(settings: Settings, serde: EnvelopeSerde, resource_types: set[str]) -> PriorIndex:
    """Latest published revision of every (resource, source version) on the given topics.

    A full scan: fine for the embedded stack and modest retention; a production deployment
    with long retention points this at a compacted latest-state topic instead.
    """
    index: PriorIndex = {}
    consumer = _consumer(settings)
    try:
        for rtype in sorted(resource_types):
            topic = canonical_topic(rtype)
            parts = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
            stops = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                     for p in parts}
            consumer.assign([TopicPartition(topic, p, 0) for p in parts])
            for msg in _scan(consumer, stops, topic):
                remember(index, serde.deserialize(msg.value(), topic))  # type: ignore[attr-defined]
            consumer.unassign()
    finally:
        consumer.close()
    return index
