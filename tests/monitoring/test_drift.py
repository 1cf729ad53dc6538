"""The drift tests and image statistics on data whose answer is known."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from patient_ml.monitoring import drift
from patient_ml.monitoring.image_stats import image_statistics


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(out, format="PNG")
    return out.getvalue()


def test_image_statistics_of_a_known_image() -> None:
    pixels = np.tile(np.arange(100, dtype=np.uint8), (50, 1))  # 0..99 on every row
    stats = image_statistics(_png(pixels))
    assert (stats["width"], stats["height"]) == (100, 50)
    assert stats["mean"] == pytest.approx(49.5) and stats["p50"] == pytest.approx(49.5)
    assert stats["p05"] == pytest.approx(4.95) and stats["p95"] == pytest.approx(94.05)
    assert stats["std"] == pytest.approx(np.arange(100).std(), rel=1e-4)
    assert len(stats["sha256"]) == 64


def test_unreadable_bytes_keep_the_fingerprint_without_statistics() -> None:
    stats = image_statistics(b"not an image")
    assert len(stats["sha256"]) == 64 and stats["mean"] is None and stats["width"] is None


def test_ks_and_psi_separate_same_from_shifted() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(100, 10, 400)
    same = rng.normal(100, 10, 100)
    shifted = rng.normal(115, 10, 100)
    assert drift.ks_test(reference, same)["pValue"] > 0.01
    assert drift.ks_test(reference, shifted)["pValue"] < 1e-6
    assert drift.psi(reference, same) < 0.1 < 0.25 < drift.psi(reference, shifted)


def test_label_chi_square_flags_a_new_label_mix() -> None:
    reference = {"0": 200, "1": 200}
    assert drift.label_chi_square(reference, {"0": 52, "1": 48})["pValue"] > 0.1
    assert drift.label_chi_square(reference, {"0": 95, "1": 5})["pValue"] < 1e-6
    # a label the reference never predicted counts as drift, not as a division by zero
    assert drift.label_chi_square({"0": 400}, {"0": 50, "1": 50})["pValue"] < 1e-6
