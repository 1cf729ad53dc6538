"""The `patient-ml` command line."""
