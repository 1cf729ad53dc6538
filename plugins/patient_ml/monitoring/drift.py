"""Two-sample drift tests of a window of served predictions against a reference sample.

- Kolmogorov-Smirnov (scipy `ks_2samp`) per statistic: the p-value of "same distribution".
- Population stability index over the reference's deciles: sum((w - r) * ln(w / r)); < 0.1
  little change, 0.1-0.25 some, > 0.25 a shift (the usual reading).
- Chi-square test of homogeneity of the predicted-label counts of the reference and the window
  (scipy `chi2_contingency`, a 2 x labels table): both are samples, so a small reference does
  not make every window look different.

Intervals of live performance come from `patient_ml.evaluation.intervals` (one unit per
prediction: the prediction log keeps no patient ids).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# scipy is imported inside the tests that need it: it takes seconds to import, and the REST API
# reads monitoring events through modules that import this one.

PSI_BINS = 10
PSI_FLOOR = 1e-4


def ks_test(reference: Sequence[float], window: Sequence[float]) -> dict[str, float]:
    from scipy import stats

    result = stats.ks_2samp(np.asarray(reference, float), np.asarray(window, float))
    return {"ks": round(float(result.statistic), 6), "pValue": float(result.pvalue)}


def psi(reference: Sequence[float], window: Sequence[float], bins: int = PSI_BINS) -> float:
    ref = np.asarray(reference, float)
    win = np.asarray(window, float)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1)
    w = np.bincount(np.searchsorted(edges, win, side="right"), minlength=len(edges) + 1)
    r = np.clip(r / max(len(ref), 1), PSI_FLOOR, None)
    w = np.clip(w / max(len(win), 1), PSI_FLOOR, None)
    return round(float(np.sum((w - r) * np.log(w / r))), 6)


def label_chi_square(
    reference_counts: Mapping[str, int], window_counts: Mapping[str, int]
) -> dict[str, Any]:
    labels = sorted(set(reference_counts) | set(window_counts), key=str)
    ref = np.array([reference_counts.get(k, 0) for k in labels], float)
    win = np.array([window_counts.get(k, 0) for k in labels], float)
    if win.sum() == 0 or ref.sum() == 0 or len(labels) < 2:
        return {"chiSquare": 0.0, "pValue": 1.0}
    from scipy import stats

    result = stats.chi2_contingency(np.vstack([ref, win]), correction=len(labels) == 2)
    return {
        "chiSquare": round(float(result.statistic), 6),
        "pValue": float(result.pvalue),
        "referenceShares": {k: round(float(v), 4) for k, v in zip(labels, ref / ref.sum(),
                                                                   strict=True)},
        "windowShares": {k: round(float(v), 4) for k, v in zip(labels, win / win.sum(),
                                                                strict=True)},
    }  # fmt: skip


MMD_PERMUTATIONS = 500
MMD_MAX_REFERENCE = 600


def mmd_test(
    reference: Sequence[Sequence[float]],
    window: Sequence[Sequence[float]],
    *,
    permutations: int = MMD_PERMUTATIONS,
    seed: int = 0,
) -> dict[str, Any]:
    """Two-sample test of feature vectors: the maximum mean discrepancy (biased MMD², Gaussian
    kernel on features standardised by the reference, bandwidth the median squared distance of
    the pooled sample) with a permutation p-value, (b + 1) / (permutations + 1). A reference
    larger than MMD_MAX_REFERENCE is subsampled (seeded)."""
    rng = np.random.default_rng(seed)
    ref = np.asarray(reference, dtype=np.float64)
    win = np.asarray(window, dtype=np.float64)
    if len(ref) > MMD_MAX_REFERENCE:
        ref = ref[rng.choice(len(ref), MMD_MAX_REFERENCE, replace=False)]
    mean, spread = ref.mean(axis=0), ref.std(axis=0)
    spread[spread < 1e-9] = 1.0
    pooled = (np.vstack([ref, win]) - mean) / spread
    squared = np.square(pooled).sum(axis=1)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2 * pooled @ pooled.T, 0.0)
    upper = distances[np.triu_indices(len(pooled), k=1)]
    bandwidth = float(np.median(upper[upper > 0])) if np.any(upper > 0) else 1.0
    kernel = np.exp(-distances / bandwidth)
    n, m = len(ref), len(win)

    def statistic(is_window: np.ndarray) -> float:
        weights = np.where(is_window, -1.0 / m, 1.0 / n)
        return float(weights @ kernel @ weights)

    labels = np.r_[np.zeros(n, bool), np.ones(m, bool)]
    observed = statistic(labels)
    exceed = sum(statistic(rng.permutation(labels)) >= observed for _ in range(permutations))
    return {
        "mmd2": round(observed, 6),
        "pValue": (exceed + 1) / (permutations + 1),
        "permutations": permutations,
        "reference": n,
        "window": m,
    }


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment of a family of p-values (family-wise error control): a
    check is significant at level alpha when its adjusted p-value is below alpha."""
    ordered = sorted(p_values.items(), key=lambda kv: kv[1])
    adjusted: dict[str, float] = {}
    running = 0.0
    for rank, (name, p) in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - rank) * p))
        adjusted[name] = running
    return adjusted
