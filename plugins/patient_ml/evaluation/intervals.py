"""Intervals that count what is independent: a cluster bootstrap of every test metric the
platform reports, and paired challenger - champion differences.

Why clusters. Test images are not independent observations: the images of one patient share
that patient's anatomy and disease, and a copy of a slice (identical bytes, or the same slice
flipped, rotated, re-contrasted or cropped) is the same observation seen twice. A bootstrap that
resamples images counts each copy as new evidence, so its intervals are too narrow, the more so
the larger the groups (a test set of 449 images may hold 100 distinct slices). The unit
resampled here is the example's independence cluster from the snapshot manifest (`cluster`: the
connected component of its patient, identical images and verified near-duplicate copies; the
`patientKey` for manifests written before clusters were), as in the cluster bootstrap
(Davison & Hinkley 1997, section 3.8; Field & Welsh 2007).

Method. Each of `resamples` resamples (default 2,000) draws as many clusters as the test set
has, with replacement, from a seeded generator (same input, same interval). A resample is a
vector of cluster multiplicities; each metric is computed from per-cluster sufficient
statistics weighted by it (confusion counts, log-likelihood sums, calibration-bin sums, pixel
intersections and counts), vectorised over resamples. AUROC is the weighted Mann-Whitney count
over the scores sorted once (ties count half). The interval is the percentile interval of the
resampled values (2.5th and 97.5th percentiles at the default 95 %); the point estimate is the
metric of the test set as it is (the same number as `patient_ml.evaluation.metrics`).

Paired differences. Challenger and champion answer the same images, so what is hard for one is
often hard for the other. The difference challenger - champion is taken within each resample
(the same cluster multiplicities for both), which keeps that shared variation out of the
interval; two separate intervals, or two independent resamplings, would be much wider.

Limits. With few clusters (say under 30) percentile intervals of a cluster bootstrap are too
narrow; with one cluster there is nothing to resample and no interval is given (`low`/`high`
None). A metric undefined in a resample (the recall of a class the resample does not hold, an
AUROC without both classes) leaves that resample out; `undefined` counts them. Monitoring's live
windows have no clusters (the prediction log keeps no patient ids), so they resample
predictions (`ClusterBootstrap(None, images=n)`).

To add a metric family (an operating point, a subgroup), write a `Statistic`: its names and a
`prepare` that turns cluster multiplicities into values; `ClusterBootstrap` does the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from patient_ml.evaluation.metrics import EPS, confidence_bin

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95
DEFAULT_SEED = 0
CALIBRATION_BINS = 10  # as metrics.expected_calibration_error
CHUNK_CELLS = 1 << 21  # resamples x max(images, clusters) per vectorised step (memory bound)

Prepared = Callable[[np.ndarray], np.ndarray]
"""Cluster multiplicities (resamples x clusters) → metric values (resamples x names)."""


class Statistic(Protocol):
    """Metrics computable from cluster multiplicities (see `ClassificationStatistic`)."""

    @property
    def names(self) -> tuple[str, ...]: ...

    def prepare(self, index: np.ndarray, clusters: int) -> Prepared:
        """`index[i]` is the cluster (0..clusters-1) of example i."""
        ...


# ----------------------------------------------------------------------------- results


class Interval(BaseModel):
    """A metric's point estimate with its percentile interval (None: not defined)."""

    model_config = ConfigDict(frozen=True)

    value: float | None = Field(description="The metric on the test set as it is.")
    low: float | None = Field(description="Lower end of the interval.")
    high: float | None = Field(description="Upper end of the interval.")
    undefined: int = Field(
        0, description="Resamples in which the metric is undefined, left out of the interval."
    )

    def wire(self) -> dict[str, float | int | None]:
        """value, low, high, and `undefined` when some resamples left the metric undefined."""
        return self.model_dump(exclude_defaults=True)


class Resampling(BaseModel):
    """How the intervals were made, and how many independent units the test set holds."""

    model_config = ConfigDict(frozen=True)

    method: Literal["cluster bootstrap, percentile interval"] = (
        "cluster bootstrap, percentile interval"
    )
    unit: Literal["cluster", "image"] = Field(
        description="What one draw takes: an independence cluster (patient or copy group), or "
        "one image where no clusters are known (monitoring's live windows)."
    )
    level: float
    resamples: int
    seed: int
    images: int = Field(description="Test images scored.")
    clusters: int = Field(description="Independent clusters among them.")


class Comparison(BaseModel):
    """One contender's intervals, or challenger and champion with their paired differences."""

    model_config = ConfigDict(frozen=True)

    resampling: Resampling
    challenger: dict[str, Interval]
    champion: dict[str, Interval] | None = None
    differences: dict[str, Interval] = Field(
        default_factory=dict, description="challenger - champion, on the same resamples."
    )


# ----------------------------------------------------------------------------- bootstrap


class ClusterBootstrap:
    """Resamples the clusters of one test set; `clusters[i]` is example i's cluster id, or
    None for one cluster per example (then `images` says how many)."""

    def __init__(
        self,
        clusters: Sequence[str] | None,
        *,
        images: int | None = None,
        resamples: int = DEFAULT_RESAMPLES,
        level: float = DEFAULT_LEVEL,
        seed: int = DEFAULT_SEED,
    ) -> None:
        if resamples < 1:
            raise ValueError(f"resamples is {resamples}; use at least 1 (default 2000)")
        if not 0 < level < 1:
            raise ValueError(f"level is {level}; use a share between 0 and 1 (e.g. 0.95)")
        if clusters is None:
            if images is None or images < 0:
                raise ValueError("images is required (>= 0) when no clusters are given")
            self.index = np.arange(images)
            unit: Literal["cluster", "image"] = "image"
        else:
            ids = [str(c) for c in clusters]
            if images is not None and images != len(ids):
                raise ValueError(f"images is {images} but {len(ids)} cluster ids were given")
            # Sorted ids: the same examples in another order get the same draws per cluster.
            _, self.index = np.unique(np.asarray(ids, dtype=str), return_inverse=True)
            unit = "cluster"
        self.clusters = int(self.index.max()) + 1 if self.index.size else 0
        self.resampling = Resampling(
            unit=unit,
            level=level,
            resamples=resamples,
            seed=seed,
            images=int(self.index.size),
            clusters=self.clusters,
        )

    def weights(self) -> Iterator[np.ndarray]:
        """Cluster multiplicities of every resample, a block of rows at a time (each row sums
        to the number of clusters); the same blocks on every call."""
        rng = np.random.default_rng(self.resampling.seed)
        count, total = self.clusters, self.resampling.resamples
        rows = max(1, CHUNK_CELLS // max(count, self.resampling.images, 1))
        done = 0
        while done < total:
            r = min(rows, total - done)
            if count == 0:
                yield np.zeros((r, 0))
            else:
                draws = rng.integers(0, count, size=(r, count)) + (np.arange(r) * count)[:, None]
                yield (
                    np.bincount(draws.ravel(), minlength=r * count)
                    .reshape(r, count)
                    .astype(np.float64)
                )
            done += r

    def estimate(self, statistic: Statistic) -> dict[str, Interval]:
        """Each metric of `statistic` with its interval."""
        return self.compare(statistic).challenger

    def compare(self, challenger: Statistic, champion: Statistic | None = None) -> Comparison:
        """Intervals of both, and of challenger - champion on the same resamples."""
        subjects = [challenger] if champion is None else [challenger, champion]
        prepared = [s.prepare(self.index, self.clusters) for s in subjects]
        ones = np.ones((1, self.clusters))
        points = [p(ones)[0] for p in prepared]
        blocks: list[list[np.ndarray]] = [[] for _ in prepared]
        for w in self.weights():
            for i, p in enumerate(prepared):
                blocks[i].append(p(w))
        values = [np.vstack(b) for b in blocks]
        found = [
            {n: self._interval(points[i][j], values[i][:, j]) for j, n in enumerate(s.names)}
            for i, s in enumerate(subjects)
        ]
        differences: dict[str, Interval] = {}
        if champion is not None:
            theirs = {n: j for j, n in enumerate(champion.names)}
            for j, name in enumerate(challenger.names):
                if name in theirs:
                    k = theirs[name]
                    differences[name] = self._interval(
                        points[0][j] - points[1][k], values[0][:, j] - values[1][:, k]
                    )
        return Comparison(
            resampling=self.resampling,
            challenger=found[0],
            champion=found[1] if champion is not None else None,
            differences=differences,
        )

    def _interval(self, point: float, values: np.ndarray) -> Interval:
        finite = values[np.isfinite(values)]
        value = float(point) if np.isfinite(point) else None
        if value is None or finite.size == 0 or self.clusters < 2:
            return Interval(value=value, low=None, high=None, undefined=values.size - finite.size)
        tail = (1 - self.resampling.level) / 2
        low, high = np.quantile(finite, [tail, 1 - tail])
        return Interval(
            value=value, low=float(low), high=float(high), undefined=values.size - finite.size
        )


def _per_cluster(index: np.ndarray, clusters: int, rows: np.ndarray) -> np.ndarray:
    """Sum of each cluster's rows (clusters x columns)."""
    out = np.zeros((clusters, rows.shape[1]))
    np.add.at(out, index, rows)
    return out


def _divide(top: np.ndarray, bottom: np.ndarray, empty: float) -> np.ndarray:
    return np.divide(top, bottom, out=np.full(np.broadcast(top, bottom).shape, empty),
                     where=bottom > 0)  # fmt: skip


# ----------------------------------------------------------------------------- imgClf


@dataclass(frozen=True)
class _Ranked:
    """One class's scores sorted once, as per-cluster sufficient statistics: how many positive
    and negative examples each cluster has at each distinct score (distinct scores x clusters,
    sparse), lowest score first."""

    positives: Any
    negatives: Any

    @classmethod
    def of(
        cls, score: np.ndarray, positive: np.ndarray, index: np.ndarray, clusters: int
    ) -> _Ranked:
        from scipy import sparse

        distinct, group = np.unique(score, return_inverse=True)
        shape = (len(distinct), clusters)

        def table(mask: np.ndarray) -> Any:
            ones = np.ones(int(mask.sum()))
            return sparse.csr_matrix((ones, (group[mask], index[mask])), shape=shape)

        return cls(table(positive), table(~positive))

    def auroc(self, wt: np.ndarray) -> np.ndarray:
        """AUROC under each column of cluster multiplicities `wt` (clusters x resamples): the
        weighted share of (positive, negative) pairs ordered right, ties counting half."""
        pos = np.asarray(self.positives @ wt)
        neg = np.asarray(self.negatives @ wt)
        below = np.cumsum(neg, axis=0) - neg
        pairs = (pos * (below + 0.5 * neg)).sum(axis=0)
        return _divide(pairs, pos.sum(axis=0) * neg.sum(axis=0), np.nan)


@dataclass(frozen=True)
class ClassificationStatistic:
    """accuracy, balancedAccuracy, macroF1, auroc, logLoss, expectedCalibrationError,
    precision:<label>, recall:<label> — defined as in `metrics.classification_metrics`."""

    label_names: tuple[str, ...]
    y: np.ndarray  # position (0..k-1) of each example's true label
    p: np.ndarray  # n x k, rows normalised

    @classmethod
    def of(
        cls,
        labels: Sequence[int],
        y_true: Sequence[int],
        probabilities: Sequence[Sequence[float]] | np.ndarray,
        names: Sequence[str] | None = None,
    ) -> ClassificationStatistic:
        """As `classification_metrics(labels, y_true, probabilities)`; `names` of the labels
        (default their indices) name the per-class metrics."""
        position = {c: k for k, c in enumerate(labels)}
        unknown = sorted({int(v) for v in y_true} - set(position))
        if unknown:
            raise ValueError(f"true labels {unknown} are not among the labels {list(labels)}")
        y = np.array([position[v] for v in y_true], dtype=np.int64)
        p = np.asarray(probabilities, dtype=np.float64).reshape(len(y), -1)
        if p.shape != (len(y), len(labels)):
            raise ValueError(
                f"probabilities have shape {p.shape}, expected {(len(y), len(labels))}"
            )
        p = p / np.clip(p.sum(axis=1, keepdims=True), EPS, None)
        label_names = tuple(str(n) for n in (names or labels))
        if len(label_names) != len(labels):
            raise ValueError(f"{len(label_names)} names for {len(labels)} labels")
        return cls(label_names, y, p)

    @property
    def names(self) -> tuple[str, ...]:
        return (
            "accuracy",
            "balancedAccuracy",
            "macroF1",
            "auroc",
            "logLoss",
            "expectedCalibrationError",
            *(f"precision:{n}" for n in self.label_names),
            *(f"recall:{n}" for n in self.label_names),
        )

    def prepare(self, index: np.ndarray, clusters: int) -> Prepared:
        y, p = self.y, self.p
        n, k = p.shape
        bins = CALIBRATION_BINS
        predicted = p.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
        confidence = p.max(axis=1) if n else np.zeros(0)
        correct = (predicted == y).astype(float)
        which = confidence_bin(confidence, bins)
        rows = np.zeros((n, k * k + 2 + 3 * bins))
        rows[np.arange(n), y * k + predicted] = 1.0  # confusion cell
        rows[:, k * k] = 1.0  # examples
        rows[:, k * k + 1] = -np.log(np.clip(p[np.arange(n), y], EPS, 1.0))
        base = k * k + 2
        rows[np.arange(n), base + which] = 1.0  # calibration bin counts
        rows[np.arange(n), base + bins + which] = confidence
        rows[np.arange(n), base + 2 * bins + which] = correct
        sums = _per_cluster(index, clusters, rows)
        scored = [1] if k == 2 else list(range(k))
        ranked = [_Ranked.of(p[:, c], y == c, index, clusters) for c in scored]

        def values(w: np.ndarray) -> np.ndarray:
            t = w @ sums
            r = t.shape[0]
            confusion = t[:, : k * k].reshape(r, k, k)
            total = t[:, k * k]
            tp = np.diagonal(confusion, axis1=1, axis2=2)
            support = confusion.sum(axis=2)
            called = confusion.sum(axis=1)
            recall = _divide(tp, support, np.nan)
            precision = _divide(tp, called, 0.0)
            recall0 = np.nan_to_num(recall)
            f1 = _divide(2 * precision * recall0, precision + recall0, 0.0)
            present = support > 0
            n_present = present.sum(axis=1)
            balanced = _divide(np.where(present, recall0, 0).sum(axis=1), n_present, np.nan)
            macro_f1 = _divide(np.where(present, f1, 0).sum(axis=1), n_present, np.nan)
            bin_conf = t[:, base + bins : base + 2 * bins]
            bin_correct = t[:, base + 2 * bins : base + 3 * bins]
            ece = _divide(np.abs(bin_correct - bin_conf).sum(axis=1), total, np.nan)
            wt = np.ascontiguousarray(w.T)
            auroc = _nanmean_rows(np.column_stack([x.auroc(wt) for x in ranked]))
            return np.column_stack(
                [
                    _divide(tp.sum(axis=1), total, np.nan),
                    balanced,
                    macro_f1,
                    auroc,
                    _divide(t[:, k * k + 1], total, np.nan),
                    ece,
                    precision,
                    recall,
                ]
            )

        return values


def _nanmean_rows(a: np.ndarray) -> np.ndarray:
    known = np.isfinite(a)
    return _divide(np.where(known, a, 0).sum(axis=1), known.sum(axis=1), np.nan)


# ----------------------------------------------------------------------------- imgSeg


@dataclass(frozen=True)
class SegmentationStatistic:
    """meanDice, meanIoU, dice:<label>, iou:<label>, pooled over the pixels of the resampled
    images as in `metrics.segmentation_metrics` (a label absent from both masks scores 1)."""

    label_names: tuple[str, ...]
    counts: np.ndarray  # n x labels x (intersection, true pixels, predicted pixels)

    @classmethod
    def of(
        cls, labels: Sequence[int], counts: Sequence[np.ndarray] | np.ndarray,
        names: Sequence[str] | None = None,
    ) -> SegmentationStatistic:  # fmt: skip
        """`counts[i]` is `metrics.pixel_counts(labels, truth_i, predicted_i)`."""
        array = np.asarray(counts, dtype=np.float64).reshape(-1, len(labels), 3)
        label_names = tuple(str(n) for n in (names or labels))
        if len(label_names) != len(labels):
            raise ValueError(f"{len(label_names)} names for {len(labels)} labels")
        return cls(label_names, array)

    @property
    def names(self) -> tuple[str, ...]:
        return (
            "meanDice",
            "meanIoU",
            *(f"dice:{n}" for n in self.label_names),
            *(f"iou:{n}" for n in self.label_names),
        )

    def prepare(self, index: np.ndarray, clusters: int) -> Prepared:
        n, labels, _ = self.counts.shape
        sums = _per_cluster(index, clusters, self.counts.reshape(n, labels * 3))

        def values(w: np.ndarray) -> np.ndarray:
            t = (w @ sums).reshape(w.shape[0], labels, 3)
            inter, truth, predicted = t[..., 0], t[..., 1], t[..., 2]
            dice = _divide(2 * inter, truth + predicted, 1.0)
            iou = _divide(inter, truth + predicted - inter, 1.0)
            return np.column_stack([dice.mean(axis=1), iou.mean(axis=1), dice, iou])

        return values


# ----------------------------------------------------------------------------- joined


@dataclass(frozen=True)
class Joined:
    """Several statistics of one model as one (their names in order), so that one
    `ClusterBootstrap.compare` gives every interval and paired difference on the same
    resamples (e.g. the threshold-free metrics and those at the operating point)."""

    parts: tuple[Statistic, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for part in self.parts for name in part.names)

    def prepare(self, index: np.ndarray, clusters: int) -> Prepared:
        prepared = [part.prepare(index, clusters) for part in self.parts]

        def values(w: np.ndarray) -> np.ndarray:
            return np.column_stack([p(w) for p in prepared])

        return values
