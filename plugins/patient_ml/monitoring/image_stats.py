"""Cheap statistics of one image, kept in the prediction log instead of the image itself.

The fingerprint is the sha256 of the bytes as sent; the statistics are of the grayscale
intensities (0..255): mean, standard deviation, 5th/50th/95th percentiles, and the size. A
percentile of a large image is taken on a fixed-stride subsample (at most ~65k pixels), so the
cost stays well under a millisecond per megapixel.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import numpy as np
from PIL import Image

from patient_ml.monitoring.features import image_features

# The statistics compared with the reference profile (the size is logged, not tested: serving
# resizes, and a size change alone is not drift of what the model sees).
STATISTICS = ("mean", "std", "p05", "p50", "p95")
MAX_SAMPLE_PIXELS = 65_536


def fingerprint(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_statistics(data: bytes) -> dict[str, Any]:
    """`{"sha256", "width", "height", "mean", "std", "p05", "p50", "p95", "features"}` (the
    last: `features.image_features`); the statistics are None when the bytes are not an image
    PIL can read (the endpoint decides what it accepts)."""
    stats: dict[str, Any] = {"sha256": fingerprint(data)}
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            image.draft("L", (512, 512))  # JPEG: decode at a reduced scale
            pixels = np.asarray(image.convert("L"), dtype=np.float32)
    except Exception:
        return {**stats, "width": None, "height": None, **dict.fromkeys(STATISTICS),
                "features": None}  # fmt: skip
    return {**stats, "width": int(width), "height": int(height), **pixel_statistics(pixels),
            "features": image_features(pixels)}  # fmt: skip


def pixel_statistics(pixels: np.ndarray) -> dict[str, float]:
    flat = pixels.reshape(-1)
    if flat.size > MAX_SAMPLE_PIXELS:
        flat = flat[:: int(np.ceil(flat.size / MAX_SAMPLE_PIXELS))]
    p05, p50, p95 = np.percentile(flat, (5, 50, 95))
    return {
        "mean": round(float(flat.mean()), 4),
        "std": round(float(flat.std()), 4),
        "p05": round(float(p05), 4),
        "p50": round(float(p50), 4),
        "p95": round(float(p95), 4),
    }
