"""Which ``cdc.*`` topics the canonicalizer subscribes to."""

from __future__ import annotations

from fhirbus.settings import Settings

CDC_TOPIC_PATTERN = r"^cdc\..*"


def cdc_topics(settings: Settings) -> list[str]:
    """Every declared table's topic when a sources file is configured (a declared table
    without a mapping then dead-letters its changes, visibly), else every ``cdc.*`` topic
    by regex (librdkafka finds topics created later at its metadata refresh)."""
    path = settings.cdc.sources_file
    if path is None:
        return [CDC_TOPIC_PATTERN]
    from fhirbus.connectors.sources import load_sources

    return [s.topic(t) for s in load_sources(path) for t in s.tables]
