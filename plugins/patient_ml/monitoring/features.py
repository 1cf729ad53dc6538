"""A fixed image descriptor for feature drift: what a new scanner, site or export changes.

Intensity statistics (`image_stats`) barely move under a blur, a lower resolution or added noise,
yet those change what a model sees. This descriptor (25 numbers, no learned weights, nothing to
download) measures the image's texture and sharpness at several scales, computed from the
grayscale image resampled to 128 x 128 and stretched to its own 1st-99th percentiles (so that
brightness and contrast, which the intensity statistics already watch, do not dominate it):

- gradient energy (mean absolute difference of neighbours) at 1, 1/2 and 1/4 scale, and the
  fine-to-coarse ratios: a blur or a lower resolution removes the fine scale first;
- the Laplacian's spread (sharpness) and its median absolute deviation (a robust noise level:
  noise raises it everywhere, edges only in a few places);
- the radially averaged power spectrum in 8 log-spaced bands (log10), the frequency content;
- 8x8 blockiness at the image's own resolution (steps across block edges over those inside:
  JPEG recompression);
- an 8-bin histogram of the stretched intensities and its entropy.

The prediction log keeps this vector for each prediction (never the image); the reference
profile keeps it for the champion's test split; `drift.mmd_test` compares the two.
"""

from __future__ import annotations

import numpy as np

SIDE = 128
BANDS = 8
HISTOGRAM_BINS = 8
NAMES = (
    "grad1", "grad2", "grad4", "grad1_2", "grad2_4", "laplacianStd", "noiseMad",
    *(f"power{b}" for b in range(BANDS)), "blockiness",
    *(f"hist{b}" for b in range(HISTOGRAM_BINS)), "entropy",
)  # fmt: skip
DIMENSIONS = len(NAMES)


def _radial_bands() -> tuple[np.ndarray, np.ndarray]:
    fy = np.fft.fftfreq(SIDE)[:, None]
    fx = np.fft.rfftfreq(SIDE)[None, :]
    radius = np.sqrt(fx * fx + fy * fy)
    edges = np.geomspace(1.0 / SIDE, 0.5 * np.sqrt(2), BANDS + 1)
    band = np.minimum(np.searchsorted(edges, radius, side="right") - 1, BANDS - 1)
    band[band < 0] = BANDS  # the mean (removed before the transform): no band
    return band, edges


_BAND, _ = _radial_bands()


def _resampled(pixels: np.ndarray) -> np.ndarray:
    from PIL import Image

    image = Image.fromarray(np.asarray(pixels, dtype=np.float32), mode="F")
    small = np.asarray(image.resize((SIDE, SIDE), Image.Resampling.BOX), dtype=np.float64)
    low, high = np.percentile(small, (1, 99))
    if high - low < 1e-6:
        return np.zeros_like(small)
    return np.clip((small - low) / (high - low), 0.0, 1.0)


def _gradient(x: np.ndarray) -> float:
    return float(np.abs(np.diff(x, axis=0)).mean() + np.abs(np.diff(x, axis=1)).mean())


def _half(x: np.ndarray) -> np.ndarray:
    return 0.25 * (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2])


def _blockiness(pixels: np.ndarray) -> float:
    """JPEG's 8x8 blocks at the image's own resolution (a 256-pixel window at the centre,
    on the block grid): the mean step across block edges over the mean step inside blocks."""
    height, width = pixels.shape[:2]
    top = max(0, (height // 2 - 128) // 8 * 8)
    left = max(0, (width // 2 - 128) // 8 * 8)
    x = pixels[top : top + 256, left : left + 256]
    if min(x.shape) < 16:
        return 1.0
    columns = np.abs(np.diff(x, axis=1))  # step between column j and j + 1
    rows = np.abs(np.diff(x, axis=0))
    edge_columns = np.arange(columns.shape[1]) % 8 == 7
    edge_rows = np.arange(rows.shape[0]) % 8 == 7
    across = columns[:, edge_columns].mean() + rows[edge_rows].mean()
    inside = columns[:, ~edge_columns].mean() + rows[~edge_rows].mean()
    return float(across / (inside + 1e-9))


def image_features(pixels: np.ndarray) -> list[float]:
    """The descriptor of a grayscale image (any size, any intensity range)."""
    x = _resampled(pixels)
    half = _half(x)
    quarter = _half(half)
    g1, g2, g4 = _gradient(x), _gradient(half), _gradient(quarter)
    laplacian = -4 * x[1:-1, 1:-1] + x[:-2, 1:-1] + x[2:, 1:-1] + x[1:-1, :-2] + x[1:-1, 2:]
    mad = float(np.median(np.abs(laplacian - np.median(laplacian))))
    spectrum = np.abs(np.fft.rfft2(x - x.mean())) ** 2
    power = np.bincount(_BAND.ravel(), weights=spectrum.ravel(), minlength=BANDS + 1)[:BANDS]
    counts = np.bincount(_BAND.ravel(), minlength=BANDS + 1)[:BANDS]
    power = np.log10(power / np.maximum(counts, 1) + 1e-9)
    blockiness = _blockiness(np.asarray(pixels, dtype=np.float64))
    histogram = np.histogram(x, bins=HISTOGRAM_BINS, range=(0.0, 1.0))[0] / x.size
    nonzero = histogram[histogram > 0]
    entropy = float(-(nonzero * np.log2(nonzero)).sum())
    values = [
        g1, g2, g4, g1 / (g2 + 1e-9), g2 / (g4 + 1e-9), float(laplacian.std()), mad,
        *power.tolist(), blockiness, *histogram.tolist(), entropy,
    ]  # fmt: skip
    return [round(float(v), 6) for v in values]
