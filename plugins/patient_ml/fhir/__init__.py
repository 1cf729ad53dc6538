"""FHIR R4: the data contract (mapping constants), record parsing and NDJSON sources."""
