"""The CDC side of the canonicalizer's record handler: Kafka record -> canonical events.

Records that carry no row change (delete tombstones, logical-decoding messages,
transaction BEGIN/END) are skipped on purpose and counted
(``fhirbus.canonicalizer.cdc_skipped{kind}``); everything else maps or raises a
MappingError, which the runtime dead-letters with the original bytes.
"""

from __future__ import annotations

import logging

from fhirbus import telemetry
from fhirbus.consumers.records import Record
from fhirbus.schemas.envelope import CanonicalEvent

from .debezium import Skip, decode
from .mapper import map_change
from .mapping import Mappings

log = logging.getLogger(__name__)


class CdcHandler:
    def __init__(self, mappings: Mappings) -> None:
        self.mappings = mappings
        self._skipped = telemetry.meter("fhirbus.canonicalizer").create_counter(
            "fhirbus.canonicalizer.cdc_skipped", unit="{record}",
            description="CDC records without a row change (tombstones, messages, tx markers)",
        )
        self.skipped: dict[str, int] = {"tombstone": 0, "message": 0, "transaction": 0}

    def __call__(self, record: Record) -> list[CanonicalEvent]:
        change = decode(record.raw, record.key)
        if isinstance(change, Skip):
            self.skipped[change.kind] += 1
            self._skipped.add(1, {"kind": change.kind})
            log.debug("cdc record skipped", extra={"kind": change.kind, "topic": record.topic,
                                                   "offset": record.offset})
            return []
        return map_change(change, self.mappings, record)
