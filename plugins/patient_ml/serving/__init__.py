"""Serving models through the container contract (`serve`: GET /ping, POST /invocations)."""
