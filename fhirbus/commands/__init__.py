"""CLI subcommands of the platform core (broker, topics, schemas)."""
