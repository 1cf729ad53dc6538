"""Figures of the Docker Compose stack for docs/running-at-scale.md.

Builds (or reuses) the image from the host's wheelhouse on the local base image, brings up
docker-compose.yaml + docker-compose.local.yaml with two Celery workers against this machine's
PostgreSQL and Redis, runs the demo's run 1 (maxTrials 4, two trial workers) through
`airflow-cli`, then brings everything down, and prints: time to build, time to up, the demo's
and the DAG run's time, which worker ran which trials, and what `down` left behind.

    .venv/bin/python benchmarks/compose_stack.py [--max-trials 4] [--workers 2] [--cold]

`--cold` removes the cached image first, so the build is measured too.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from include.compose_stack import IMAGE_REPO, run_compose_demo

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-trials", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cold", action="store_true", help="rebuild the image (measure the build)")
    ap.add_argument("--admin-url", default=ADMIN_URL, help="PostgreSQL to create databases in")
    args = ap.parse_args()
    if args.cold:
        tags = subprocess.run(
            ["docker", "images", IMAGE_REPO, "--format", "{{.Repository}}:{{.Tag}}"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        for tag in tags:
            subprocess.run(["docker", "rmi", tag], capture_output=True, check=False)
    started = time.monotonic()
    figures = run_compose_demo(
        f"pml-bench-{uuid.uuid4().hex[:8]}",
        admin_url=args.admin_url,
        max_trials=args.max_trials,
        workers=args.workers,
    )
    print(figures.report())
    print(f"  wall time, build to down: {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
