"""CDC change events (Debezium format) to canonical FHIR events, driven by per-table YAML.

``map_change`` is the pure core; ``CdcHandler`` is what the canonicalizer's record handler
calls for records on ``cdc.*`` topics; ``load_mappings`` reads a folder of mapping files
(``FHIRBUS_CDC__MAPPINGS_DIR``, default: the labbilling example). Format: README.md here.
"""

from .errors import CDC_DEAD_LETTER_REASONS
from .handler import CdcHandler
from .load import EXAMPLE_MAPPINGS, load_mappings
from .mapper import map_change
from .mapping import Mappings, TableMapping
from .topics import cdc_topics

__all__ = [
    "CDC_DEAD_LETTER_REASONS",
    "EXAMPLE_MAPPINGS",
    "CdcHandler",
    "Mappings",
    "TableMapping",
    "cdc_topics",
    "load_mappings",
    "map_change",
]
