"""Dead-letter toolset: list, show, replay and purge dead-lettered records, audited."""
