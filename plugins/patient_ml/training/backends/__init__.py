"""Where a training job runs: a local process (embedded default) or a Docker container."""
