"""Drift detection between sources, canonical topics and projections; replay tooling."""
