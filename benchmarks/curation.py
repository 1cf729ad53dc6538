"""Curation throughput and memory on synthetic records; prints its figures.

    .venv/bin/python benchmarks/curation.py [--records 100000] [--workers 8]

Builds N DocumentReferences (N unique 16x16 PNGs on disk, 2 per synthetic patient, 85%
labelled), curates them from NDJSON into a temporary local artifact store with a SQLite
product DB, and prints records/s and the peak RSS. It also times our record parser against
full fhir.resources validation on the same records, which is why curation parses with orjson.
"""

from __future__ import annotations

import argparse
import io
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(folder: Path, n: int, code: str, label_system: str) -> None:
    from patient_ml.fhir import mapping

    images = folder / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with (
        open(folder / "DocumentReference.ndjson", "wb") as docs,
        open(folder / "Observation.ndjson", "wb") as obs,
    ):
        for i in range(n):
            buf = io.BytesIO()
            pixels = rng.integers(0, 255, (16, 16), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(buf, format="PNG")
            path = images / f"{i:07d}.png"
            path.write_bytes(buf.getvalue())
            doc = {
                "resourceType": "DocumentReference",
                "id": f"d{i}",
                "status": "current",
                "type": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "subject": {"reference": f"Patient/p{i // 2}"},
                "content": [{"attachment": {"contentType": "image/png", "url": path.as_uri()}}],
            }
            docs.write(orjson.dumps(doc) + b"\n")
            if i % 7 == 0:
                continue
            label = {
                "resourceType": "Observation",
                "id": f"o{i}",
                "status": "final" if i % 5 else "preliminary",
                "code": {
                    "coding": [{"system": mapping.LABEL_CODE_SYSTEM, "code": mapping.LABEL_CODE}]
                },
                "focus": [{"reference": f"DocumentReference/d{i}"}],
                "valueCodeableConcept": {"coding": [{"system": label_system, "code": str(i % 2)}]},
            }
            obs.write(orjson.dumps(label) + b"\n")


def parse_timing(folder: Path, sample: int) -> tuple[float, float]:
    from fhir.resources.R4B.documentreference import DocumentReference

    from patient_ml.curation import records as rec

    lines = (folder / "DocumentReference.ndjson").read_bytes().splitlines()[:sample]
    token_filter = rec.TokenFilter(["http://loinc.org|bench"])
    start = time.perf_counter()
    for line in lines:
        rec.image_record(rec.parse_resource(line), token_filter)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    for line in lines:
        DocumentReference.model_validate_json(line)
    full = time.perf_counter() - start
    return len(lines) / ours, len(lines) / full


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()

    from patient_ml.curation.curate import curate
    from patient_ml.curation.fetch import FetchPolicy, ImageFetcher
    from patient_ml.curation.sources import NdjsonSource
    from patient_ml.db import schema
    from patient_ml.db.engine import get_engine, session_scope
    from patient_ml.services.datasets import create_dataset
    from patient_ml.storage import LocalArtifactStore

    with tempfile.TemporaryDirectory(prefix="pml-bench-") as tmp:
        work = Path(tmp)
        engine = get_engine(f"sqlite:///{work / 'bench.db'}", check_schema=False)
        schema.upgrade(engine)
        config = {
            "name": "bench",
            "problemDefinition": {
                "problemType": "imgClf",
                "labelDefinition": {"labels": [{"name": "a"}, {"name": "b"}]},
                "labelSystem": "urn:bench",
                "trainingDataFilter": {
                    "filterType": "FhirCodesFilter",
                    "codes": ["http://loinc.org|bench"],
                },
            },
        }
        with session_scope(engine) as session:
            dataset_id = create_dataset(session, config, actor="bench").id
        t0 = time.perf_counter()
        build(work / "src", args.records, "bench", "urn:bench")
        built = time.perf_counter() - t0
        print(f"records: {args.records:,} DocumentReferences (+ labels), built in {built:.1f} s")
        ours, full = parse_timing(work / "src", min(args.records, 10_000))
        print(f"parse: our record parser {ours:,.0f}/s, fhir.resources R4B {full:,.0f}/s "
              f"({ours / full:.1f}x)")  # fmt: skip
        fetcher = ImageFetcher(FetchPolicy(allowed_file_roots=(work / "src",)))
        t0 = time.perf_counter()
        result = curate(
            engine=engine,
            dataset_ref=dataset_id,
            source=NdjsonSource(work / "src"),
            store=LocalArtifactStore(work / "artifacts"),
            fetcher=fetcher,
            workdir=work / "scratch",
            workers=args.workers,
        )
        elapsed = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"curation: {result.example_count:,} examples in {elapsed:.1f} s "
              f"= {args.records / elapsed:,.0f} records/s; peak RSS {peak_mb:.0f} MB")  # fmt: skip
        print(f"snapshot {result.snapshot_id[:12]}: {result.report['examples']['bySplit']}")


if __name__ == "__main__":
    main()
