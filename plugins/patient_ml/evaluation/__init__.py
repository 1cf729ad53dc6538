"""The evaluate stage: test metrics computed by the platform, identically for every model."""
