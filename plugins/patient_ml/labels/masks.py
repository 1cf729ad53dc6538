"""Segmentation masks as the platform stores them (one-channel PNG, pixel value = label index,
0 = background) and as the reference API carries them (one RLE area per label)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from patient_ml.exceptions import FieldError, InvalidInputError
from patient_ml.labels import rle

MAX_MASK_PIXELS = 50_000_000


def areas_to_png(
    areas: Sequence[Mapping[str, Any]],
    *,
    height: int,
    width: int,
    index_of_label: Mapping[str, int],
) -> bytes:
    """One PNG mask from RLE areas `[{id: label id, rle}]`; refuses unknown labels, a label
    given twice and pixels claimed by two labels (422 naming the area)."""
    if height < 1 or width < 1 or height * width > MAX_MASK_PIXELS:
        raise InvalidInputError(
            f"A mask of {width}x{height} pixels is out of range.",
            [FieldError("height", f"height x width must be 1..{MAX_MASK_PIXELS}", height)],
            fix="send the size of the example's image",
        )
    mask = np.zeros((height, width), dtype=np.uint8)
    seen: dict[str, int] = {}
    for i, area in enumerate(areas):
        label_id = str(area.get("id"))
        if label_id not in index_of_label:
            known = ", ".join(sorted(index_of_label)) or "none"
            raise InvalidInputError(
                f"areas[{i}].id {label_id!r} is not a label of this dataset.",
                [FieldError(f"areas[{i}].id", f"must be one of the label ids: {known}", label_id)],
                fix="use the ids of problemDefinition.labelDefinition.labels",
            )
        if label_id in seen:
            raise InvalidInputError(
                f"Label {label_id!r} has two areas (areas[{seen[label_id]}] and areas[{i}]).",
                [FieldError(f"areas[{i}].id", "each label has at most one area", label_id)],
                fix="merge the label's areas into one mask",
            )
        seen[label_id] = i
        flat = rle.decode(
            list(area.get("rle") or []),
            expected_size=height * width * 4,
            field=f"areas[{i}].rle",
        )
        covered = flat.reshape(height, width, 4)[:, :, 3] > 0
        overlap = int(np.count_nonzero(covered & (mask > 0)))
        if overlap:
            raise InvalidInputError(
                f"areas[{i}] (label {label_id!r}) overlaps an earlier area on {overlap} pixels.",
                [FieldError(f"areas[{i}].rle", f"overlaps an earlier area on {overlap} pixels")],
                fix="a pixel has one label: erase it from one of the areas",
            )
        mask[covered] = index_of_label[label_id]
    return png_of(mask)


def png_to_areas(data: bytes, *, label_of_index: Mapping[int, str]) -> dict[str, Any]:
    """`{height, width, areas}` of a stored PNG mask: one area per label present in it."""
    pixels = read_png(data)
    height, width = pixels.shape
    areas = []
    for index in sorted(int(v) for v in np.unique(pixels) if v):
        if index not in label_of_index:
            continue  # a retired label: the dataset no longer defines it
        rgba = np.repeat(((pixels == index) * 255).astype(np.uint8)[:, :, None], 4, axis=2)
        areas.append({"id": label_of_index[index], "rle": rle.encode(rgba)})
    return {"height": int(height), "width": int(width), "areas": areas}


def png_of(mask: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(mask, mode="L").save(out, format="PNG", optimize=True)
    return out.getvalue()


def read_png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        if img.size[0] * img.size[1] > MAX_MASK_PIXELS:
            raise ValueError(f"mask of {img.size[0]}x{img.size[1]} pixels is too large")
        return np.asarray(img.convert("L") if img.mode in {"1", "P"} else img)


def image_size(data: bytes) -> tuple[int, int]:
    """(height, width) of an image file, read from its header."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return img.size[1], img.size[0]
