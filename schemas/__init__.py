"""Shared contracts: the canonical envelope, the topic catalog and serde.

This package imports nothing else from fhirbus, so any consumer team can depend on it alone.
"""
