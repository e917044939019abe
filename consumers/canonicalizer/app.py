"""``fhirbus canonicalize``: the pure mapper on the consumer runtime.

The handler maps one raw record and returns one Publish per canonical event, keyed by the
patient; the runtime publishes them, waits for the broker, and only then commits the raw
offset. A MappingError (a PermanentError) makes the runtime dead-letter the original bytes
to ``dlq.canonicalizer.v1`` with the reason and path in ``dlq.error_message``.
"""

from __future__ import annotations

from collections.abc import Sequence

from fhirbus.consumers.records import Publish, Record
from fhirbus.consumers.runtime import ConsumerRuntime, ConsumerSpec
from fhirbus.kafka.config import resolve_registry_url
from fhirbus.schemas.envelope import CanonicalEvent
from fhirbus.schemas.serde import EnvelopeSerde, registry_client
from fhirbus.schemas.topics import CDC_TOPIC_PREFIX, RAW_HL7, canonical_topic
from fhirbus.settings import Settings

from .cdc import CdcHandler, load_mappings
from .context import RawRef
from .errors import ParseFailure
from .mapper import map_message
from .site import SiteConfig

STAGE = "canonicalizer"
GROUP_ID = "fhirbus-canonicalizer"


class Canonicalizer:
    """The record handler: raw HL7 record (or, on ``cdc.*`` topics, a Debezium change event)
    -> Publish effects on canonical topics."""

    def __init__(self, site: SiteConfig, serde: EnvelopeSerde,
                 cdc: CdcHandler | None = None) -> None:
        self.site = site
        self.serde = serde
        self.cdc = cdc

    def __call__(self, record: Record) -> list[Publish]:
        if self.cdc is not None and record.topic.startswith(CDC_TOPIC_PREFIX):
            return [self.publish(event) for event in self.cdc(record)]
        raw = record.raw
        if not raw:
            raise ParseFailure("record", "empty record value")
        events = map_message(raw, RawRef.from_record(record), self.site)
        return [self.publish(event) for event in events]

    def publish(self, event: CanonicalEvent) -> Publish:
        topic = canonical_topic(event.resource_type)
        headers = [
            ("fhirbus.event_type", event.event_type.encode()),
            ("fhirbus.mapping_version", event.mapping_version.encode()),
        ]
        return Publish(topic, self.serde.serialize(event, topic), event.key, headers)


def build_spec(
    settings: Settings,
    site: SiteConfig,
    topics: Sequence[str] = (RAW_HL7,),
    group_id: str = GROUP_ID,
    dead_letter_topic: str | None = None,
) -> ConsumerSpec:
    serde = EnvelopeSerde(registry_client(resolve_registry_url(settings)))
    return ConsumerSpec(
        stage=STAGE,
        group_id=group_id,
        topics=list(topics),
        handler=Canonicalizer(site, serde, CdcHandler(load_mappings(settings.cdc.mappings_dir))),
        dead_letter_topic=dead_letter_topic,
        # A regex subscription (^cdc\..*) finds topics created later at metadata refresh.
        consumer_overrides={"topic.metadata.refresh.interval.ms": 10_000}
        if any(t.startswith("^") for t in topics) else {},
    )


def run(
    settings: Settings,
    site: SiteConfig,
    *,
    topics: Sequence[str] = (RAW_HL7,),
    group_id: str = GROUP_ID,
    max_records: int | None = None,
    idle_exit_s: float | None = None,
    install_signals: bool = True,
) -> int:
    runtime = ConsumerRuntime(build_spec(settings, site, topics, group_id), settings)
    if install_signals:
        runtime.install_signal_handlers()
    return runtime.run(max_records=max_records, idle_exit_s=idle_exit_s)
