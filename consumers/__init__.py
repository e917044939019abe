"""The consumer runtime every fhirbus consumer runs on, and the consumers built on it."""
