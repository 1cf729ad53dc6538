"""The demo's Br35H snapshot, curated without Airflow: what `make demo` does to the data.

`include/sample_data build br35h` (all 2,999 usable images, 1-4 per synthetic patient, 10 %
draft and 5 % unlabelled), a dataset from `include/configs/brain_mri_dataset.yaml` reading
that folder, a first curation, then the later labels added and a second curation (the demo's
second run). Used by `benchmarks/leakage.py` and `tests/curation/test_br35h_leakage.py`.

    .venv/bin/python benchmarks/br35h_snapshot.py --out var/br35h-clean
        builds the sample, curates it into OUT/artifacts (SQLite product DB OUT/patient_ml.db)
        and prints the manifest's path: the cleaned snapshot the reference trainers use.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "plugins") not in sys.path:
    sys.path.insert(0, str(ROOT / "plugins"))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass
class CuratedSample:
    examples: list[dict[str, Any]]  # manifest lines after the header
    image_root: Path  # the artifact store folder of the dataset (example["image"]["key"])
    manifest_uri: str
    reports: list[dict[str, Any]]  # report.json of both curations
    dataset_id: str = ""

    def image_path(self, example: dict[str, Any]) -> Path:
        return self.image_root / example["image"]["key"]

    def grey_images(self) -> list[Any]:
        """Every example's stored image as a greyscale PIL image, in manifest order."""
        from PIL import Image

        images = []
        for example in self.examples:
            with Image.open(self.image_path(example)) as opened:
                images.append(opened.convert("L"))
        return images


def build_sample(out: Path, limit: int | None = None) -> Path:
    """`include/sample_data build br35h --out OUT/sample` as `make demo` runs it (the first
    `limit` images when given)."""
    sample = out / "sample"
    subprocess.run(
        [sys.executable, str(ROOT / "include" / "sample_data"), "build", "br35h", "--out",
         str(sample), *(["--limit", str(limit)] if limit else [])],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return sample


def curate_sample(
    engine: Any, sample: Path, out: Path, name: str | None = None, salt: str | None = None
) -> CuratedSample:
    """Both curations of the demo into OUT/artifacts. `salt`: the dataset's split salt (the
    secret its patient keys and split drawing are keyed with; default a random one), so a
    benchmark can draw the same splits again."""
    from patient_ml.curation.fetch import FetchPolicy, ImageFetcher
    from patient_ml.curation.sources import NdjsonSource
    from patient_ml.db.engine import session_scope
    from patient_ml.services.curation import curate
    from patient_ml.services.datasets import create_dataset
    from patient_ml.storage import LocalArtifactStore

    config = yaml.safe_load((ROOT / "include" / "configs" / "brain_mri_dataset.yaml").read_text())
    config["name"] = name or f"brain-mri-{uuid.uuid4().hex[:6]}"
    config["source"] = {"type": "ndjson", "uri": sample.as_uri()}
    with session_scope(engine) as session:
        dataset = create_dataset(session, config, actor="benchmark")
        if salt is not None:
            dataset.split_salt = salt
        dataset_id = dataset.id
    store = LocalArtifactStore(out / "artifacts")
    fetcher = ImageFetcher(FetchPolicy(allowed_file_roots=(sample,), max_bytes=50_000_000))
    reports = []
    for step in ("first", "second"):
        if step == "second":  # the demo's clinician confirms the draft and missing labels
            later = sample / "later" / "2.Observation.ndjson"
            shutil.copy(later, sample / later.name)
        result = curate(
            engine=engine,
            dataset_ref=dataset_id,
            source=NdjsonSource(sample),
            store=store,
            fetcher=fetcher,
            workdir=out / f"work-{step}",
            workers=4,
        )
        reports.append(result.report)
    lines = store.read_bytes(result.manifest_uri.removeprefix(store.uri(""))).splitlines()
    examples = [orjson.loads(line) for line in lines[1:]]
    return CuratedSample(
        examples,
        out / "artifacts" / "datasets" / dataset_id,
        result.manifest_uri,
        reports,
        dataset_id,
    )


def main() -> None:
    import argparse

    from benchmarks import smoke
    from patient_ml.db import schema
    from patient_ml.db.engine import get_engine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "br35h-clean")
    parser.add_argument("--limit", type=int, help="the first N images (default: all 3,000)")
    args = smoke.parse(
        parser, limit=300, out=Path(tempfile.gettempdir()) / f"br35h-smoke-{uuid.uuid4().hex[:8]}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{args.out / 'patient_ml.db'}"
    schema.upgrade(get_engine(url, check_schema=False))
    curated = curate_sample(get_engine(url), build_sample(args.out, args.limit), args.out)
    splits: dict[str, int] = {}
    for example in curated.examples:
        splits[example["split"]] = splits.get(example["split"], 0) + 1
    print(f"manifest: {curated.manifest_uri}")
    print(f"images:   {curated.image_root}/<image.key>")
    print("examples by split: " + ", ".join(f"{k} {v}" for k, v in sorted(splits.items())))


if __name__ == "__main__":
    main()
