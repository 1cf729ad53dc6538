"""Image segmentation (imgSeg): a per-pixel classifier on multi-scale filter features.

Features of the grayscale [0, 1] image (scipy.ndimage, reflect borders): the raw pixel,
Gaussian smoothing, Gaussian gradient magnitude and Laplacian of Gaussian at sigmas 1, 2, 4
(and 8 for the smoothing), differences of Gaussians (1-2, 2-4, 4-8); standardised with the
training sample's mean and std. A softmax regression (hidden_units=0) or a one-hidden-layer MLP
is trained with Adam on `pixels_per_image` pixels drawn per training image, with equal quotas
per label present (background included) and class-balanced loss weights. Prediction: a pixel
is foreground when 1 - p(background) >= threshold (then the most likely foreground label);
connected components smaller than min_object_size pixels are removed.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import nn
import numpy as np
from contract import (
    HP,
    Paths,
    Problem,
    TrainerError,
    fmt,
    load_model,
    log,
    open_image,
    png_base64,
    read_channel,
    read_hyperparameters,
    read_problem,
    save_model,
    to_gray,
    to_label_map,
)
from scipy import ndimage

PROBLEM_TYPE = "imgSeg"
FORMAT = 1
SIGMAS = (1.0, 2.0, 4.0)
SMOOTH_SIGMAS = (1.0, 2.0, 4.0, 8.0)
FEATURE_NAMES = (
    ["raw"]
    + [f"gauss{s:g}" for s in SMOOTH_SIGMAS]
    + [f"gradmag{s:g}" for s in SIGMAS]
    + [f"log{s:g}" for s in SIGMAS]
    + [f"dog{a:g}-{b:g}" for a, b in itertools.pairwise(SMOOTH_SIGMAS)]
)
VAL_PIXEL_BUDGET = 2_000_000  # validation pixels kept in memory for per-epoch metrics

HYPERPARAMETERS = {
    "learning_rate": HP(float, "0.05", 1e-7, 10.0),
    "epochs": HP(int, "30", 1, 10_000),
    "hidden_units": HP(int, "8", 0, 1024),
    "pixels_per_image": HP(int, "4000", 2, 10_000_000),
    "threshold": HP(float, "0.5", 0.0, 1.0),
    "min_object_size": HP(int, "16", 0, 10_000_000),
    "batch_size": HP(int, "256", 1, 10_000_000),
    "l2": HP(float, "1e-4", 0.0, 100.0),
    "seed": HP(int, "0", 0, 2**32 - 1),
}


# --- features ----------------------------------------------------------------------------


def features(gray: np.ndarray) -> np.ndarray:
    """(H*W, len(FEATURE_NAMES)) float32 features of a 2-D [0, 1] image."""
    image = gray.astype(np.float32)
    smooth = {s: ndimage.gaussian_filter(image, s, mode="reflect") for s in SMOOTH_SIGMAS}
    planes = [image, *(smooth[s] for s in SMOOTH_SIGMAS)]
    planes += [ndimage.gaussian_gradient_magnitude(image, s, mode="reflect") for s in SIGMAS]
    planes += [ndimage.gaussian_laplace(image, s, mode="reflect") for s in SIGMAS]
    planes += [smooth[a] - smooth[b] for a, b in itertools.pairwise(SMOOTH_SIGMAS)]
    return np.stack(planes, axis=-1).reshape(-1, len(planes))


def load_example(example: dict[str, Any], name: str, positions: np.ndarray) -> tuple:
    """(gray image, class-position map) of one example; errors name channel and line."""
    where = f"channel {name} line {example['line']}"
    try:
        gray = to_gray(open_image(example["image"], "image"))
        raw = to_label_map(open_image(example["mask"], "mask"))
    except TrainerError as exc:
        raise TrainerError(f"{where}: {exc}") from None
    if raw.shape != gray.shape:
        raise TrainerError(
            f"{where}: mask is {raw.shape[1]}x{raw.shape[0]} but image is "
            f"{gray.shape[1]}x{gray.shape[0]}"
        )
    if raw.min() < 0 or raw.max() >= len(positions) or np.any(positions[raw] < 0):
        found = sorted(int(v) for v in np.unique(raw))[:10]
        raise TrainerError(f"{where}: mask values {found} are not 0 or the problem's label indices")
    return gray, positions[raw]


# --- prediction --------------------------------------------------------------------------


def postprocess(
    probs: np.ndarray, shape: tuple[int, int], threshold: float, min_object_size: int
) -> np.ndarray:
    """Class-position map: foreground where 1 - p(background) >= threshold, then the most
    likely foreground class; components smaller than min_object_size become background."""
    foreground = (1.0 - probs[:, 0]) >= threshold
    out = np.where(foreground, probs[:, 1:].argmax(axis=1) + 1, 0).reshape(shape)
    if min_object_size > 1 and out.any():
        components, count = ndimage.label(out > 0)
        sizes = np.bincount(components.ravel(), minlength=count + 1)
        small = sizes < min_object_size
        small[0] = False
        out[small[components]] = 0
    return out


class DiceCounter:
    """Pooled Dice per foreground class over many images."""

    def __init__(self, classes: int) -> None:
        self.classes = classes
        self.overlap = np.zeros(classes, np.int64)
        self.truth = np.zeros(classes, np.int64)
        self.predicted = np.zeros(classes, np.int64)

    def add(self, truth: np.ndarray, predicted: np.ndarray) -> None:
        t = np.bincount(truth.ravel(), minlength=self.classes)
        p = np.bincount(predicted.ravel(), minlength=self.classes)
        both = np.bincount(
            truth.ravel()[truth.ravel() == predicted.ravel()], minlength=self.classes
        )
        self.truth += t[: self.classes]
        self.predicted += p[: self.classes]
        self.overlap += both[: self.classes]

    def dice(self) -> float:
        scores = [
            2 * self.overlap[c] / (self.truth[c] + self.predicted[c])
            for c in range(1, self.classes)
            if self.truth[c] + self.predicted[c] > 0
        ]
        return float(np.mean(scores)) if scores else 1.0


class LossCounter:
    """Class-balanced cross-entropy over many pixels."""

    def __init__(self, classes: int) -> None:
        self.total = np.zeros(classes)
        self.count = np.zeros(classes, np.int64)

    def add(self, probs: np.ndarray, truth: np.ndarray) -> None:
        losses = -np.log(np.maximum(probs[np.arange(len(truth)), truth], 1e-12))
        self.total += np.bincount(truth, weights=losses, minlength=len(self.total))
        self.count += np.bincount(truth, minlength=len(self.count))

    def loss(self) -> float:
        present = self.count > 0
        return float(np.mean(self.total[present] / self.count[present]))


# --- training ----------------------------------------------------------------------------


def class_positions(problem: Problem) -> tuple[list[int], np.ndarray]:
    """Label index per class position (0 = background) and the lookup index -> position."""
    indices = [0] + [index for index in problem.indices if index != 0]
    lookup = np.full(256, -1, np.int64)
    lookup[indices] = np.arange(len(indices))
    return indices, lookup


def sample_pixels(
    labels: np.ndarray, quota: int, classes: int, rng: np.random.Generator
) -> np.ndarray:
    """Flat pixel indices: an equal share of `quota` per class present (fewer if it is small)."""
    flat = labels.ravel()
    present = [c for c in range(classes) if np.any(flat == c)]
    share = max(1, quota // len(present))
    chosen = []
    for c in present:
        where = np.flatnonzero(flat == c)
        take = min(share, len(where))
        chosen.append(np.sort(rng.choice(where, size=take, replace=False)))
    return np.concatenate(chosen)


def evaluate_set(
    params: dict[str, np.ndarray],
    items: Iterable[tuple[np.ndarray, np.ndarray]],
    hps: dict[str, Any],
    classes: int,
) -> tuple[float, float]:
    """(val_loss, val_dice) over (standardised features, class map) pairs."""
    dice, loss = DiceCounter(classes), LossCounter(classes)
    for x, truth in items:
        probs = nn.probabilities(params, x)
        loss.add(probs, truth.ravel())
        dice.add(truth, postprocess(probs, truth.shape, hps["threshold"], hps["min_object_size"]))
    return loss.loss(), dice.dice()


def train(paths: Paths) -> None:
    started = time.perf_counter()
    hps = read_hyperparameters(paths, HYPERPARAMETERS)
    problem = read_problem(paths, PROBLEM_TYPE)
    indices, lookup = class_positions(problem)
    classes = len(indices)
    if classes < 2:
        raise TrainerError("imgSeg needs at least one foreground label (index > 0)")
    log("hyperparameters: " + " ".join(f"{k}={v}" for k, v in sorted(hps.items())))
    rng = np.random.default_rng(hps["seed"])

    train_examples = read_channel(paths.train_dir, "train", ("image", "mask"))
    val_examples = read_channel(paths.validation_dir, "validation", ("image", "mask"))
    xs, ys, class_pixels = [], [], np.zeros(classes, np.int64)
    step = max(1, len(train_examples) // 5)
    for row, example in enumerate(train_examples):
        gray, labels = load_example(example, "train", lookup)
        chosen = sample_pixels(labels, hps["pixels_per_image"], classes, rng)
        xs.append(features(gray)[chosen])
        ys.append(labels.ravel()[chosen])
        class_pixels += np.bincount(labels.ravel(), minlength=classes)
        if (row + 1) % step == 0 or row + 1 == len(train_examples):
            log(f"train: featurised {row + 1}/{len(train_examples)} images")
    x_train, y_train = np.concatenate(xs), np.concatenate(ys)
    del xs, ys
    counts = np.bincount(y_train, minlength=classes)
    if counts[0] == 0 or not counts[1:].any():
        raise TrainerError("channel train needs both background and foreground pixels")
    log(
        f"examples: train {len(train_examples)} validation {len(val_examples)}; sampled pixels "
        f"{len(y_train)}; train pixel share per label "
        + " ".join(
            f"{i}:{n / class_pixels.sum():.3f}" for i, n in zip(indices, class_pixels, strict=True)
        )
    )
    mean = x_train.mean(axis=0, dtype=np.float64).astype(np.float32)
    std = np.maximum(x_train.std(axis=0, dtype=np.float64), 1e-6).astype(np.float32)
    x_train = (x_train - mean) / std

    val_items, val_rest, budget = [], [], VAL_PIXEL_BUDGET
    for example in val_examples:
        if budget <= 0:
            val_rest.append(example)
            continue
        gray, labels = load_example(example, "validation", lookup)
        val_items.append(((features(gray) - mean) / std, labels))
        budget -= labels.size
    if val_rest:
        log(
            f"validation: per-epoch metrics on the first {len(val_items)} images; the final "
            f"line covers all {len(val_examples)}"
        )

    params, best_epoch, best_dice, best_loss = nn.fit(
        x_train,
        y_train,
        classes,
        hps,
        lambda p: evaluate_set(p, val_items, hps, classes),
        "val_dice",
    )
    final_dice, final_loss = best_dice, best_loss
    if val_rest:  # the saved model on the whole validation channel, streamed

        def rest() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for example in val_rest:
                gray, truth = load_example(example, "validation", lookup)
                yield (features(gray) - mean) / std, truth

        final_loss, final_dice = evaluate_set(
            params, itertools.chain(val_items, rest()), hps, classes
        )
    metrics = {"val_dice": final_dice, "val_loss": final_loss, "best_epoch": best_epoch}
    save_model(
        paths.model_dir,
        {"mean": mean, "std": std, **params},
        {
            "trainer": "img_seg",
            "format": FORMAT,
            "problemType": PROBLEM_TYPE,
            "labels": [{"index": i, "name": n} for i, n in problem.labels],
            "class_indices": indices,
            "features": list(FEATURE_NAMES),
            "threshold": hps["threshold"],
            "min_object_size": hps["min_object_size"],
            "hidden_units": hps["hidden_units"],
            "hyperparameters": hps,
            "metrics": metrics,
            "train_examples": len(train_examples),
            "validation_examples": len(val_examples),
        },
    )
    log(
        f"final best_epoch={best_epoch} val_loss={fmt(final_loss)} val_dice={fmt(final_dice)} "
        f"train_examples={len(train_examples)} validation_examples={len(val_examples)} "
        f"seconds={time.perf_counter() - started:.1f}"
    )
    log("model saved")


# --- inference ---------------------------------------------------------------------------


class Segmenter:
    """A trained model as `serve` and tools/evaluate.py use it."""

    def __init__(self, model_dir: Path) -> None:
        arrays, meta = load_model(model_dir)
        if meta.get("trainer") != "img_seg" or meta.get("format") != FORMAT:
            raise ValueError("model.json is not an img_seg model of a known format")
        if meta["features"] != list(FEATURE_NAMES):
            raise ValueError("the model was trained on other features than this code computes")
        self.indices = np.asarray(meta["class_indices"], np.int64)
        self.threshold = float(meta["threshold"])
        self.min_object_size = int(meta["min_object_size"])
        self.mean, self.std = arrays.pop("mean"), arrays.pop("std")
        self.params = arrays
        self.description = f"img_seg model ({len(self.indices) - 1} foreground labels)"

    def segment(self, gray: np.ndarray) -> np.ndarray:
        """Label-index map (same shape) of a 2-D [0, 1] grayscale image."""
        probs = nn.probabilities(self.params, (features(gray) - self.mean) / self.std)
        positions = postprocess(probs, gray.shape, self.threshold, self.min_object_size)
        return self.indices[positions]

    def predict(self, data: bytes) -> dict[str, Any]:
        gray = to_gray(open_image(data))
        labels = self.segment(gray)
        return {"mask": png_base64(labels), "width": gray.shape[1], "height": gray.shape[0]}

    def response(self, prediction: dict[str, Any]) -> dict[str, Any]:
        return prediction
