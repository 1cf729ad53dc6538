"""Image classification (imgClf): softmax regression or a one-hidden-layer MLP on standardised
grayscale pixels, trained with mini-batch Adam and class-balanced cross-entropy in NumPy.

Preprocessing (the same in train, serve and tools/evaluate.py): grayscale, resize to
image_size x image_size (bilinear, antialiased; JPEGs are decoded at a reduced scale first),
scale to [0, 1], per-pixel standardisation with the training set's mean and std.
"""

from __future__ import annotations

import time
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
    read_channel,
    read_hyperparameters,
    read_problem,
    save_model,
    to_gray,
)
from PIL import Image

PROBLEM_TYPE = "imgClf"
FORMAT = 1
STD_FLOOR = 0.01  # pixels that hardly vary (e.g. black borders) are not blown up

HYPERPARAMETERS = {
    "learning_rate": HP(float, "0.01", 1e-7, 10.0),
    "epochs": HP(int, "20", 1, 10_000),
    "batch_size": HP(int, "64", 1, 1_000_000),
    "l2": HP(float, "1e-4", 0.0, 100.0),
    "image_size": HP(int, "64", 4, 512),
    "hidden_units": HP(int, "0", 0, 4096),
    "seed": HP(int, "0", 0, 2**32 - 1),
}


# --- preprocessing -----------------------------------------------------------------------


def pixels(image: Image.Image, size: int) -> np.ndarray:
    """Grayscale [0, 1] pixels of `image` resized to size x size, flattened (float32)."""
    gray = Image.fromarray(to_gray(image))  # float32 -> mode F
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.float32).reshape(-1)


def load_pixels(source: Path | bytes, size: int, what: str = "image") -> np.ndarray:
    return pixels(open_image(source, what, draft=(2 * size, 2 * size)), size)


def load_channel(examples: list[dict[str, Any]], name: str, size: int) -> np.ndarray:
    """All images of a channel as one (n, size*size) float32 matrix; each distinct file is
    decoded once per run (in-memory cache only)."""
    out = np.empty((len(examples), size * size), dtype=np.float32)
    cache: dict[Path, int] = {}
    started = time.perf_counter()
    step = max(1, len(examples) // 5)
    for row, example in enumerate(examples):
        path = example["image"]
        if path in cache:
            out[row] = out[cache[path]]
        else:
            try:
                out[row] = load_pixels(path, size)
            except TrainerError as exc:
                raise TrainerError(f"channel {name} line {example['line']}: {exc}") from None
            cache[path] = row
        if (row + 1) % step == 0 or row + 1 == len(examples):
            log(f"{name}: loaded {row + 1}/{len(examples)} images")
    log(f"{name}: {len(cache)} distinct images decoded in {time.perf_counter() - started:.1f} s")
    return out


def label_positions(examples: list[dict[str, Any]], name: str, problem: Problem) -> np.ndarray:
    position = {index: i for i, index in enumerate(problem.indices)}
    out = np.empty(len(examples), dtype=np.int64)
    for row, example in enumerate(examples):
        label = example["label"]
        if isinstance(label, bool) or not isinstance(label, int) or label not in position:
            raise TrainerError(
                f"channel {name} line {example['line']}: label {label!r} is not one of the "
                f"problem's label indices {problem.indices}"
            )
        out[row] = position[label]
    return out


# --- training ----------------------------------------------------------------------------


def evaluate(params: nn.Params, x: np.ndarray, y: np.ndarray, classes: int) -> tuple[float, float]:
    """Class-balanced cross-entropy and balanced accuracy (over the classes present in y)."""
    probs = nn.probabilities(params, x)
    predicted = probs.argmax(axis=1)
    losses, recalls = [], []
    for c in range(classes):
        mask = y == c
        if mask.any():
            losses.append(float(np.mean(-np.log(np.maximum(probs[mask, c], 1e-12)))))
            recalls.append(float(np.mean(predicted[mask] == c)))
    return float(np.mean(losses)), float(np.mean(recalls))


def train(paths: Paths) -> None:
    started = time.perf_counter()
    hps = read_hyperparameters(paths, HYPERPARAMETERS)
    problem = read_problem(paths, PROBLEM_TYPE)
    if len(problem.labels) < 2:
        raise TrainerError("imgClf needs at least 2 labels in problem.json")
    log("hyperparameters: " + " ".join(f"{k}={v}" for k, v in sorted(hps.items())))
    size, classes = hps["image_size"], len(problem.labels)

    channels = {}
    for name, directory in (("train", paths.train_dir), ("validation", paths.validation_dir)):
        examples = read_channel(directory, name, ("image", "label"))
        labels = label_positions(examples, name, problem)
        channels[name] = (load_channel(examples, name, size), labels)
    x_train, y_train = channels["train"]
    x_val, y_val = channels["validation"]
    counts = np.bincount(y_train, minlength=classes)
    if np.count_nonzero(counts) < 2:
        raise TrainerError("channel train has examples of only one label (need at least 2)")
    log(
        f"examples: train {len(y_train)} validation {len(y_val)}; train per label "
        + " ".join(f"{index}:{int(n)}" for index, n in zip(problem.indices, counts, strict=True))
    )

    mean = x_train.mean(axis=0, dtype=np.float64).astype(np.float32)
    std = np.maximum(x_train.std(axis=0, dtype=np.float64), STD_FLOOR).astype(np.float32)
    for x in (x_train, x_val):
        x -= mean
        x /= std

    params, best_epoch, best_score, best_loss = nn.fit(
        x_train,
        y_train,
        classes,
        hps,
        lambda p: evaluate(p, x_val, y_val, classes),
        "val_balanced_accuracy",
    )
    metrics = {"val_balanced_accuracy": best_score, "val_loss": best_loss, "best_epoch": best_epoch}
    save_model(
        paths.model_dir,
        {"mean": mean, "std": std, **params},
        {
            "trainer": "img_clf",
            "format": FORMAT,
            "problemType": PROBLEM_TYPE,
            "labels": [{"index": i, "name": n} for i, n in problem.labels],
            "image_size": size,
            "hidden_units": hps["hidden_units"],
            "hyperparameters": hps,
            "metrics": metrics,
            "train_examples": len(y_train),
            "validation_examples": len(y_val),
        },
    )
    log(
        f"final best_epoch={best_epoch} val_loss={fmt(best_loss)} "
        f"val_balanced_accuracy={fmt(best_score)} train_examples={len(y_train)} "
        f"validation_examples={len(y_val)} seconds={time.perf_counter() - started:.1f}"
    )
    log("model saved")


# --- inference ---------------------------------------------------------------------------


class Classifier:
    """A trained model as `serve` and tools/evaluate.py use it."""

    def __init__(self, model_dir: Path) -> None:
        arrays, meta = load_model(model_dir)
        if meta.get("trainer") != "img_clf" or meta.get("format") != FORMAT:
            raise ValueError("model.json is not an img_clf model of a known format")
        self.size = int(meta["image_size"])
        self.indices = [int(label["index"]) for label in meta["labels"]]
        self.mean, self.std = arrays.pop("mean"), arrays.pop("std")
        self.params = arrays
        self.description = f"img_clf model ({len(self.indices)} labels, {self.size}px)"

    def probabilities(self, rows: np.ndarray) -> np.ndarray:
        """Softmax probabilities (float64) for raw pixel rows (n, size*size) of `load_pixels`."""
        x = ((rows - self.mean) / self.std).astype(np.float32)
        return nn.softmax(nn.forward(self.params, x)[0].astype(np.float64))

    def predict(self, data: bytes) -> list[dict[str, Any]]:
        probs = self.probabilities(load_pixels(data, self.size)[None, :])[0]
        return [
            {"index": index, "confidence": float(p)}
            for index, p in zip(self.indices, probs, strict=True)
        ]

    def response(self, prediction: list[dict[str, Any]]) -> dict[str, Any]:
        return {"predictions": prediction}
