"""Embedded services for one machine and for tests: the mock Kafka cluster and the registry."""
