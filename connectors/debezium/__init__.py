"""Debezium PostgreSQL connector configs and the Kafka Connect REST client (production path)."""
