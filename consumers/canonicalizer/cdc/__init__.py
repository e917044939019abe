"""CDC change events (Debezium format) to canonical FHIR events, driven by per-table YAML."""
