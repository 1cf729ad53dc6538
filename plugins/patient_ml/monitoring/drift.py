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
