"""Load a built sample data set into a FHIR server: POST each `bundles/transaction-*.json`.

The Bundles hold `PUT Type/id` entries, so loading twice is idempotent: the second load updates
the same resources (new versions) instead of creating more. Bundles are sent in file order
(Patients first, then DocumentReferences, then Observations).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson

from patient_ml.fhir.client import FhirClient
from patient_ml.fhir.validation import validated


def bundle_files(out: Path) -> list[Path]:
    files = sorted((out / "bundles").glob("transaction-*.json"))
    if not files:
        raise FileNotFoundError(
            f"No bundles/transaction-*.json in {out}; build the sample data first "
            "(python include/sample_data build br35h --out DIR)."
        )
    return files


def load(
    out: Path,
    fhir_url: str,
    *,
    client: FhirClient | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, int]:
    """Send every Bundle of `out` to the server; returns entries per resource type and the
    number of entries the server reported as created (201) or updated (200)."""
    files = bundle_files(out)
    counts: Counter[str] = Counter()
    own = client is None
    client = client or FhirClient(fhir_url)
    started = time.monotonic()
    try:
        for number, path in enumerate(files, start=1):
            bundle = orjson.loads(path.read_bytes())
            entries = bundle.get("entry") or []
            began = time.monotonic()
            response = client.transaction(validated(bundle))
            statuses = Counter(
                str(((e or {}).get("response") or {}).get("status", "")).split(" ")[0]
                for e in response.get("entry") or []
            )
            counts.update(e["resource"]["resourceType"] for e in entries)
            counts["created"] += statuses["201"]
            counts["updated"] += statuses["200"]
            echo(
                f"[{number}/{len(files)}] {path.name}: {len(entries)} entries "
                f"({statuses['201']} created, {statuses['200']} updated) "
                f"in {time.monotonic() - began:.1f} s"
            )
    finally:
        if own:
            client.close()
    types = ", ".join(f"{counts[t]} {t}" for t in ("Patient", "DocumentReference", "Observation"))
    echo(
        f"Loaded {len(files)} bundle(s) into {fhir_url} in {time.monotonic() - started:.1f} s: "
        f"{types} ({counts['created']} created, {counts['updated']} updated)"
    )
    return dict(counts)


if __name__ == "__main__":
    import sys

    from include.sample_data.__main__ import main

    sys.exit(main(["load", *sys.argv[1:]]))
