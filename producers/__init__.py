"""Ingest: sources (HL7 v2 over MLLP) to raw topics, durable before acknowledged."""
