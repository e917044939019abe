"""fhirbus: Kafka-based event-streaming integration platform for healthcare.

The core package holds what every pipeline step shares at run time: typed settings, Kafka
client configuration, telemetry, the embedded broker and registry, and the CLI. The steps
themselves live in the top-level folders (producers, consumers, projections, ...), which
install as ``fhirbus.<step>``.
"""

__version__ = "0.1.0"
