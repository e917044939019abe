"""``fhirbus reconcile worklist replay ID``: the repair a run held back for review, done
now, through events like every other repair (causation = the run that found it)."""

from __future__ import annotations

from fhirbus.connectors.sources import find_source, load_sources
from fhirbus.consumers.canonicalizer import SiteConfig
from fhirbus.consumers.canonicalizer.cdc import load_mappings
from fhirbus.kafka.config import resolve_registry_url
from fhirbus.schemas.serde import EnvelopeSerde, registry_client
from fhirbus.settings import ConfigError, Settings

from . import cdc, rangehash
from . import topics as kt
from .runner import Actor
from .worklist import Item, Worklist


def replay_item(settings: Settings, worklist: Worklist, item_id: int,
                site: SiteConfig | None = None) -> str:
    item = worklist.get(item_id)
    if item.status != "open":
        return f"item {item_id} is {item.status}; nothing to do"
    actor = Actor(settings, item.run_id, worklist, site=site)
    prov = item.provenance
    if item.check_name == "raw-hl7":
        actor.raw_to_replay.append(
            kt.read_one(settings, prov["topic"], prov["partition"], prov["offset"]))
    elif item.check_name.startswith("cdc:"):
        actor.publish(_remap(settings, item))
    elif "topic" in prov:
        msg = kt.read_one(settings, prov["topic"], prov["partition"], prov["offset"])
        serde = EnvelopeSerde(registry_client(resolve_registry_url(settings)))
        event = serde.deserialize(msg.value(), prov["topic"])  # type: ignore[arg-type]
        actor.publish([event.with_causation(item.run_id)])
    else:
        return (f"item {item_id} ({item.drift_class}) has no event to replay; fix the read "
                "model or the source by hand, then `resolve` it")
    actor.finish()
    worklist.set_status(item_id, "replayed")
    return f"item {item_id} replayed (causation {item.run_id})"


def _remap(settings: Settings, item: Item) -> list:
    prov = item.provenance
    if settings.cdc.sources_file is None:
        raise ConfigError("replaying a CDC item needs FHIRBUS_CDC__SOURCES_FILE")
    source = find_source(load_sources(settings.cdc.sources_file), prov["source"])
    mappings = load_mappings(settings.cdc.mappings_dir)
    m = mappings.get(prov["table"])
    check = next(c for c in cdc.LABBILLING if c.table == prov["table"])
    reader = rangehash.PgReader(source.dsn)
    try:
        rows = cdc.source_rows(reader, cdc.source_side(source.name, m, check),  # type: ignore[arg-type]
                               {item.resource_id})
    finally:
        reader.close()
    if item.resource_id not in rows:
        raise LookupError(f"item {item.id}: the source row is gone; resolve it by hand")
    return cdc.remap(source.name, m, mappings, rows[item.resource_id], item.run_id)  # type: ignore[arg-type]
