"""``fhirbus up`` / ``fhirbus status``: one supervisor for every fhirbus process on a machine."""
