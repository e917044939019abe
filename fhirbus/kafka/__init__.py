"""Kafka client configuration and the producer every fhirbus component publishes with."""
