"""Hooks: the only I/O boundary of operators (product DB, FHIR server, Docker, S3)."""
