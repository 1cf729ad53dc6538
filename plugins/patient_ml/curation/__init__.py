"""Curation: FHIR records → immutable, content-addressed, leakage-free dataset snapshots."""
