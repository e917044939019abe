"""Change data capture: PostgreSQL logical decoding and Debezium on Kafka Connect."""
