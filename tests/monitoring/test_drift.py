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


def _texture(seed: int, side: int = 160) -> np.ndarray:
    """A textured image (smoothed noise): fine detail that a blur removes."""
    rng = np.random.default_rng(seed)
    base = rng.normal(128, 40, (side, side))
    smooth = np.asarray(
        Image.fromarray(base.astype(np.float32), mode="F").resize((side // 2, side // 2))
    )
    detail = np.asarray(Image.fromarray(smooth, mode="F").resize((side, side)))
    return np.clip(detail + rng.normal(0, 6, (side, side)), 0, 255).astype(np.uint8)


def test_the_descriptor_sees_blur_and_noise_but_not_brightness() -> None:
    from PIL import ImageFilter

    from patient_ml.monitoring.features import DIMENSIONS, NAMES, image_features

    pixels = _texture(1)
    plain = dict(zip(NAMES, image_features(pixels), strict=True))
    assert len(plain) == DIMENSIONS
    blurred = Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(2))
    soft = dict(zip(NAMES, image_features(np.asarray(blurred)), strict=True))
    assert soft["grad1"] < 0.6 * plain["grad1"] and soft["grad1_2"] < plain["grad1_2"]
    noisy = np.clip(pixels + np.random.default_rng(2).normal(0, 25, pixels.shape), 0, 255)
    assert image_features(noisy)[NAMES.index("noiseMad")] > 1.5 * plain["noiseMad"]
    # a brighter copy (the intensity statistics' business) has the same descriptor
    brighter = np.clip(pixels.astype(float) * 0.8 + 40, 0, 255)
    assert image_features(brighter) == pytest.approx(list(plain.values()), rel=0.05, abs=0.02)
    # the prediction log gets it with the statistics, from the bytes as sent
    assert image_statistics(_png(pixels))["features"] == pytest.approx(list(plain.values()))
    assert image_statistics(b"not an image")["features"] is None


def test_the_mmd_test_separates_blurred_windows_and_keeps_clean_ones() -> None:
    from PIL import ImageFilter

    from patient_ml.monitoring.features import image_features

    reference = [image_features(_texture(s)) for s in range(120)]
    clean = [image_features(_texture(1000 + s)) for s in range(40)]
    blurred = [
        image_features(np.asarray(Image.fromarray(_texture(2000 + s)).filter(
            ImageFilter.GaussianBlur(1.5))))
        for s in range(40)
    ]  # fmt: skip
    same = drift.mmd_test(reference, clean, permutations=199)
    moved = drift.mmd_test(reference, blurred, permutations=199)
    assert same["pValue"] > 0.05 and moved["pValue"] == pytest.approx(1 / 200)
    assert moved["mmd2"] > same["mmd2"] and (moved["reference"], moved["window"]) == (120, 40)


def test_holm_controls_the_family() -> None:
    adjusted = drift.holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert adjusted == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})


def test_estimated_performance_of_known_probabilities() -> None:
    from patient_ml.monitoring.estimated_performance import estimate

    sure = estimate([[0.9, 0.1]] * 200)  # always label 0, right 9 times in 10
    assert sure["accuracy"]["value"] == pytest.approx(0.9)
    assert sure["balancedAccuracy"]["value"] == pytest.approx(0.5)  # label 1 is never found
    assert sure["accuracy"]["low"] < 0.9 < sure["accuracy"]["high"]
    assert sure["accuracy"]["high"] - sure["accuracy"]["low"] < 0.12
    half = estimate([[0.95, 0.05]] * 100 + [[0.05, 0.95]] * 100)
    assert half["balancedAccuracy"]["value"] == pytest.approx(0.95)
    assert half["predictions"] == 200
