"""HL7 v2 -> canonical FHIR R4 events (issue 4).

``map_message(raw, ref, site)`` is the pure core; ``app`` wires it onto the consumer runtime
(``fhirbus canonicalize``) and ``replay`` re-runs it over a range of the raw topic.
"""

from .context import MAPPING_VERSION, RawRef
from .errors import DEAD_LETTER_REASONS, MappingError
from .mapper import map_message
from .site import SiteConfig, load_site_config

__all__ = [
    "DEAD_LETTER_REASONS",
    "MAPPING_VERSION",
    "MappingError",
    "RawRef",
    "SiteConfig",
    "load_site_config",
    "map_message",
]
