"""Log-based PostgreSQL CDC: a wal2json logical slot to Debezium-format change events."""
