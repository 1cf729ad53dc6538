"""Image classification (imgClf): a small convolutional network in PyTorch (CPU).

Preprocessing (the same in train, serve and tools/evaluate.py): grayscale [0, 1], resized to
image_size x image_size (bilinear, antialiased; JPEGs are decoded at a reduced scale first),
then each image standardised by its own mean and std (robust to re-windowing and scanners).

Network: 4 blocks of conv 3x3 -> batch norm -> ReLU -> max-pool 2 with width, 2*width, 4*width,
8*width channels, a last conv 3x3 block, global average pooling, dropout, a linear layer.
Training: AdamW with a cosine schedule, class-balanced cross-entropy, augmentation on every
batch (`Augmentation`: one of the 8 orientations of the square, rotation +-10 degrees, zoom
0.9-1.1, shift +-6 %, windowing, gamma 1/1.5-1.5, sharpening or blurring), a moving average of
the weights (`weight_average`) validated after every epoch, the best validation epoch kept,
early stopping after `patience` epochs without a better one. Prediction averages the logits of
the image's views in the orientations trained on (all 8 by default). Calibration: a temperature
fitted on the validation logits of the kept epoch by minimum negative log-likelihood (stored in
model.json, applied by serve).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
import torch_loop
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
from torch import nn

PROBLEM_TYPE = "imgClf"
FORMAT = 2

# The symmetries of the square as (quarter turns, mirrored): "d8" all 8 (a slice exported
# rotated or flipped is the same slice), "lr" the identity and the left-right mirror (the two
# display conventions), "none" the identity.
ORIENTATIONS = {
    "d8": tuple((k, m) for m in (False, True) for k in range(4)),
    "lr": ((0, False), (0, True)),
    "none": ((0, False),),
}


HYPERPARAMETERS = {
    "learning_rate": HP(float, "0.003", 1e-6, 1.0),
    "epochs": HP(int, "16", 1, 10_000),
    "batch_size": HP(int, "32", 2, 4096),
    "weight_decay": HP(float, "1e-4", 0.0, 1.0),
    "image_size": HP(int, "64", 16, 512),
    "width": HP(int, "8", 2, 256),
    "dropout": HP(float, "0.2", 0.0, 0.9),
    "augment": HP(bool, "true"),
    "orientations": HP(str, "d8", choices=tuple(ORIENTATIONS)),
    "rotation": HP(float, "10", 0.0, 45.0),
    "scale": HP(float, "0.1", 0.0, 0.5),
    "shift": HP(float, "0.06", 0.0, 0.25),
    "gamma": HP(float, "1.5", 1.0, 4.0),
    "window": HP(float, "0.1", 0.0, 0.4),
    "sharpen": HP(float, "1", 0.0, 4.0),
    "weight_average": HP(float, "0.99", 0.0, 0.9999),
    "patience": HP(int, "6", 0, 10_000),
    "seed": HP(int, "0", 0, 2**32 - 1),
}


# --- preprocessing -----------------------------------------------------------------------


def pixels(image: Image.Image, size: int) -> np.ndarray:
    """Grayscale [0, 1] pixels of `image` resized to size x size, standardised per image."""
    gray = Image.fromarray(to_gray(image))  # float32 -> mode F
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(gray, dtype=np.float32)
    return (array - array.mean()) / max(float(array.std()), 1e-3)


def load_pixels(source: Path | bytes, size: int, what: str = "image") -> np.ndarray:
    return pixels(open_image(source, what, draft=(2 * size, 2 * size)), size)


def load_channel(examples: list[dict[str, Any]], name: str, size: int) -> np.ndarray:
    """All images of a channel as one (n, size, size) float32 array; each distinct file is
    decoded once per run (in-memory cache only)."""
    out = np.empty((len(examples), size, size), dtype=np.float32)
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


# --- network and augmentation ------------------------------------------------------------


def block(inputs: int, outputs: int) -> list[nn.Module]:
    return [
        nn.Conv2d(inputs, outputs, 3, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    ]


class Net(nn.Module):
    def __init__(self, classes: int, width: int, dropout: float) -> None:
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = []
        previous = 1
        for w in widths:
            layers += [*block(previous, w), nn.MaxPool2d(2)]
            previous = w
        layers += block(previous, previous)
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(previous, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.head(self.dropout(x))


class Augmentation(NamedTuple):
    """What `augment` draws for every training image (the ranges include the identity). (A
    NamedTuple, not a dataclass: tools load this file under names of their own, and a
    dataclass needs its module registered while it is created.)"""

    orientations: str = "d8"  # a key of ORIENTATIONS
    rotation: float = 10.0  # degrees, uniform in +-rotation (on top of the orientation)
    scale: float = 0.1  # zoom uniform in [1 - scale, 1 + scale] (> 1 crops, < 1 pads)
    shift: float = 0.06  # translation, uniform in +-shift of the side, per axis
    gamma: float = 1.5  # gamma log-uniform in [1/gamma, gamma] on the [0, 1]-rescaled image
    window: float = 0.1  # window: up to this share of the range cut off at each end
    sharpen: float = 1.0  # unsharp mask amount uniform in [-sharpen / 2, sharpen] (< 0 blurs)

    @classmethod
    def of(cls, hps: dict[str, Any]) -> Augmentation:
        return cls(**{name: hps[name] for name in cls._fields})


_BLUR = torch.tensor([1.0, 2.0, 1.0])
_BLUR = (_BLUR[:, None] * _BLUR[None, :] / 16).view(1, 1, 3, 3)


def augment(
    x: torch.Tensor, generator: torch.Generator, aug: Augmentation | None = None
) -> torch.Tensor:
    """A random orientation (of `aug.orientations`), small rotation, zoom and shift (one
    bilinear resampling), then windowing, gamma and sharpening or blurring of a (n, 1, s, s)
    batch, each image standardised again at the end. (Linear contrast and brightness changes
    need no augmentation: the preprocessing standardises every image, so they vanish.)"""
    aug = aug or Augmentation()
    n = x.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    def per_image(values: torch.Tensor) -> torch.Tensor:
        return values.view(n, 1, 1, 1)

    choices = ORIENTATIONS[aug.orientations]
    pick = torch.randint(len(choices), (n,), generator=generator)
    turns = torch.tensor([float(k) for k, _ in choices])[pick]
    flip = torch.tensor([-1.0 if m else 1.0 for _, m in choices])[pick]
    angle = turns * (math.pi / 2) + uniform(-aug.rotation, aug.rotation) * (math.pi / 180)
    scale = uniform(1 - aug.scale, 1 + aug.scale)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
    # affine_grid's coordinates span [-1, 1]: a shift of s sides is 2s
    theta[:, 0, 2] = uniform(-2 * aug.shift, 2 * aug.shift)
    theta[:, 1, 2] = uniform(-2 * aug.shift, 2 * aug.shift)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    low = x.amin(dim=(1, 2, 3), keepdim=True)
    out = F.grid_sample(x - low, grid, align_corners=False, padding_mode="zeros")
    # intensity: on the image rescaled to [0, 1] (padding is the image's minimum)
    top = out.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    unit = out / top
    cut_low, cut_high = uniform(0, aug.window), uniform(0, aug.window)
    unit = ((unit - per_image(cut_low)) / per_image(1 - cut_low - cut_high)).clamp(0, 1)
    log_gamma = math.log(max(aug.gamma, 1.0))
    unit = unit ** per_image(torch.exp(uniform(-log_gamma, log_gamma)))
    if aug.sharpen > 0:
        blurred = F.conv2d(F.pad(unit, (1, 1, 1, 1), mode="replicate"), _BLUR)
        unit = unit + per_image(uniform(-aug.sharpen / 2, aug.sharpen)) * (unit - blurred)
    mean = unit.mean(dim=(1, 2, 3), keepdim=True)
    std = unit.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
    return (unit - mean) / std


def orient(x: torch.Tensor, turns: int, mirrored: bool) -> torch.Tensor:
    """A (n, 1, s, s) batch mirrored left-right (when `mirrored`), then turned by `turns`
    quarter turns: every symmetry of the square is one (turns, mirrored) pair."""
    if mirrored:
        x = torch.flip(x, (3,))
    return torch.rot90(x, turns, (2, 3)) if turns else x


def logits_of(
    model: nn.Module, x: np.ndarray, orientations: str = "lr", chunk: int = 256
) -> np.ndarray:
    """Logits of images (n, s, s): the mean over the image's views in `orientations` (the
    orientations the model was trained on; "lr": the image and its left-right mirror, the same
    slice in the other display convention), in validation and in serve alike."""
    views = ORIENTATIONS[orientations]
    out = []
    with torch.no_grad():
        for i in range(0, len(x), chunk):
            batch = torch.from_numpy(x[i : i + chunk])[:, None]
            out.append((sum(model(orient(batch, k, m)) for k, m in views) / len(views)).numpy())
    return np.concatenate(out)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def balanced_scores(probs: np.ndarray, y: np.ndarray, classes: int) -> tuple[float, float]:
    """Class-balanced cross-entropy and balanced accuracy (over the classes present in y)."""
    predicted = probs.argmax(axis=1)
    losses, recalls = [], []
    for c in range(classes):
        mask = y == c
        if mask.any():
            losses.append(float(np.mean(-np.log(np.maximum(probs[mask, c], 1e-12)))))
            recalls.append(float(np.mean(predicted[mask] == c)))
    return float(np.mean(losses)), float(np.mean(recalls))


# --- training ----------------------------------------------------------------------------


def train(paths: Paths) -> None:
    started = time.perf_counter()
    hps = read_hyperparameters(paths, HYPERPARAMETERS)
    problem = read_problem(paths, PROBLEM_TYPE)
    if len(problem.labels) < 2:
        raise TrainerError("imgClf needs at least 2 labels in problem.json")
    log("hyperparameters: " + " ".join(f"{k}={v}" for k, v in sorted(hps.items())))
    torch_loop.setup_torch(hps["seed"])
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

    model = Net(classes, hps["width"], hps["dropout"])
    weights = torch_loop.balanced_weights(counts)
    generator = torch.Generator().manual_seed(hps["seed"])
    x_all, y_all = torch.from_numpy(x_train)[:, None], torch.from_numpy(y_train)
    batch = min(hps["batch_size"], len(y_train))
    aug = Augmentation.of(hps)
    # inference averages over the orientations the model was trained on
    views = hps["orientations"] if hps["augment"] else "none"

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(y_all), generator=generator)
        for start in range(0, len(order) - batch + 1, batch):  # full batches (batch norm)
            idx = order[start : start + batch]
            x = x_all[idx]
            yield (augment(x, generator, aug) if hps["augment"] else x), y_all[idx]

    def validate(net: nn.Module) -> tuple[float, float]:
        return balanced_scores(softmax(logits_of(net, x_val, views)), y_val, classes)

    best = torch_loop.fit(
        model,
        batches,
        lambda logits, y: F.cross_entropy(logits, y, weight=weights),
        validate,
        "val_balanced_accuracy",
        hps,
        steps_per_epoch=len(y_train) // batch,
    )
    val_logits = logits_of(model, x_val, views)
    temperature = torch_loop.fit_temperature(val_logits, y_val)
    calibrated, _ = balanced_scores(softmax(val_logits / temperature), y_val, classes)
    metrics = {
        "val_balanced_accuracy": best.score,
        "val_loss": best.loss,
        "val_loss_calibrated": calibrated,
        "best_epoch": best.epoch,
        "temperature": temperature,
    }
    save_model(
        paths.model_dir,
        torch_loop.state_arrays(model),
        {
            "trainer": "img_clf",
            "format": FORMAT,
            "problemType": PROBLEM_TYPE,
            "labels": [{"index": i, "name": n} for i, n in problem.labels],
            "image_size": size,
            "width": hps["width"],
            "orientations": views,
            "temperature": temperature,
            "hyperparameters": hps,
            "metrics": metrics,
            "train_examples": len(y_train),
            "validation_examples": len(y_val),
        },
    )
    log(
        f"final best_epoch={best.epoch} val_loss={fmt(best.loss)} "
        f"val_balanced_accuracy={fmt(best.score)} temperature={temperature:.3f} "
        f"val_loss_calibrated={fmt(calibrated)} train_examples={len(y_train)} "
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
        torch_loop.setup_torch(0)
        self.size = int(meta["image_size"])
        self.indices = [int(label["index"]) for label in meta["labels"]]
        self.temperature = float(meta["temperature"])
        # the views averaged at inference (models saved before this key: image + mirror)
        self.orientations = str(meta.get("orientations", "lr"))
        if self.orientations not in ORIENTATIONS:
            raise ValueError(f"model.json: unknown orientations {self.orientations[:20]!r}")
        self.net = Net(len(self.indices), int(meta["width"]), 0.0)
        torch_loop.load_state(self.net, arrays)
        self.description = f"img_clf model ({len(self.indices)} labels, {self.size}px)"

    def logits(self, rows: np.ndarray) -> np.ndarray:
        """Logits (before the temperature) for images (n, size, size) of `load_pixels`, averaged
        over the model's orientations."""
        return logits_of(self.net, rows.astype(np.float32), self.orientations)

    def probabilities(self, rows: np.ndarray) -> np.ndarray:
        """Calibrated softmax probabilities (float64) for images (n, size, size) of
        `load_pixels`."""
        return softmax(self.logits(rows) / self.temperature)

    def predict(self, data: bytes) -> list[dict[str, Any]]:
        probs = self.probabilities(load_pixels(data, self.size)[None])[0]
        return [
            {"index": index, "confidence": float(p)}
            for index, p in zip(self.indices, probs, strict=True)
        ]

    def predict_many(self, images: list[bytes]) -> list[list[dict[str, Any]]]:
        """The predictions of a batch (`{"instances": [...]}`) in one forward pass per chunk."""
        rows = np.empty((len(images), self.size, self.size), dtype=np.float32)
        for position, data in enumerate(images):
            try:
                rows[position] = load_pixels(data, self.size)
            except TrainerError as exc:
                raise TrainerError(f"instance {position}: {exc}") from None
        return [
            [{"index": index, "confidence": float(p)} for index, p in zip(self.indices, probs,
                                                                          strict=True)]
            for probs in self.probabilities(rows)
        ]  # fmt: skip

    def explain(self, data: bytes, index: int) -> dict[str, Any]:
        """Grad-CAM (Selvaraju et al. 2017) for label `index`: the last convolutional block's
        activations weighted by the spatial mean of the label's logit gradient, ReLU; averaged
        over the model's orientations (each view's map turned back first), as its logits are.
        The grid is the last block's (image_size / 16 per side)."""
        if index not in self.indices:
            raise TrainerError(f"label index {index} is not one of the model's {self.indices}")
        position = self.indices.index(index)
        x = torch.from_numpy(load_pixels(data, self.size)[None, None])
        views = ORIENTATIONS[self.orientations]
        total: torch.Tensor | None = None
        with torch.enable_grad():
            for turns, mirrored in views:
                activations = self.net.features(orient(x, turns, mirrored))
                pooled = torch.flatten(F.adaptive_avg_pool2d(activations, 1), 1)
                logit = self.net.head(pooled)[0, position]
                (gradient,) = torch.autograd.grad(logit, activations)
                weights = gradient.mean(dim=(2, 3), keepdim=True)
                cam = torch.relu((weights * activations).sum(dim=1, keepdim=True)).detach()
                cam = torch.rot90(cam, -turns, (2, 3)) if turns else cam  # undo `orient`
                cam = torch.flip(cam, (3,)) if mirrored else cam
                total = cam if total is None else total + cam
        assert total is not None
        values = (total[0, 0] / len(views)).numpy().astype(np.float64)
        return {
            "method": "grad-cam",
            "index": index,
            "height": int(values.shape[0]),
            "width": int(values.shape[1]),
            "values": [[round(float(v), 6) for v in row] for row in values],
        }

    def response(self, prediction: list[dict[str, Any]]) -> dict[str, Any]:
        return {"predictions": prediction}
