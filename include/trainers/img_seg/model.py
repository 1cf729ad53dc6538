"""Image segmentation (imgSeg): a small U-Net in PyTorch (CPU).

Input: the grayscale [0, 1] image at its own resolution, standardised with the training
pixels' mean and std. U-Net: 3 levels (width, 2*width, 4*width channels, two conv 3x3 ->
batch norm -> ReLU each, max-pool 2 between them), a bottleneck of 8*width, transposed-conv
upsampling with skip connections, a 1x1 conv to one logit per class. Training: random
crop_size crops (crops_per_image per training image and epoch) with random 90-degree rotations,
flips and intensity changes; loss = cross-entropy + soft Dice of the foreground; AdamW with a
cosine schedule; the best validation epoch kept, early stopping after `patience` epochs.
Prediction: images are padded (reflect) to a multiple of 8; a pixel is foreground when
1 - p(background) >= threshold (then the most likely foreground label); connected components
smaller than min_object_size pixels are removed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    png_base64,
    read_channel,
    read_hyperparameters,
    read_problem,
    save_model,
    to_gray,
    to_label_map,
)
from scipy import ndimage
from torch import nn

PROBLEM_TYPE = "imgSeg"
FORMAT = 2
MULTIPLE = 8  # three max-pools

HYPERPARAMETERS = {
    "learning_rate": HP(float, "0.003", 1e-6, 1.0),
    "epochs": HP(int, "30", 1, 10_000),
    "batch_size": HP(int, "8", 1, 4096),
    "crop_size": HP(int, "64", 8, 2048),
    "crops_per_image": HP(int, "4", 1, 10_000),
    "width": HP(int, "8", 2, 128),
    "weight_decay": HP(float, "1e-4", 0.0, 1.0),
    "augment": HP(bool, "true"),
    "patience": HP(int, "10", 0, 10_000),
    "threshold": HP(float, "0.5", 0.0, 1.0),
    "min_object_size": HP(int, "16", 0, 10_000_000),
    "seed": HP(int, "0", 0, 2**32 - 1),
}


# --- data --------------------------------------------------------------------------------


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


def class_positions(problem: Problem) -> tuple[list[int], np.ndarray]:
    """Label index per class position (0 = background) and the lookup index -> position."""
    indices = [0] + [index for index in problem.indices if index != 0]
    lookup = np.full(256, -1, np.int64)
    lookup[indices] = np.arange(len(indices))
    return indices, lookup


def pad_to(array: np.ndarray, height: int, width: int, fill: int | None = None) -> np.ndarray:
    """`array` padded at the bottom/right to at least height x width (reflect, or `fill`)."""
    dy, dx = max(0, height - array.shape[0]), max(0, width - array.shape[1])
    if not dy and not dx:
        return array
    if fill is not None:
        return np.pad(array, ((0, dy), (0, dx)), constant_values=fill)
    mode = "reflect" if dy < array.shape[0] and dx < array.shape[1] else "edge"
    return np.pad(array, ((0, dy), (0, dx)), mode=mode)


# --- network -----------------------------------------------------------------------------


def double_conv(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
        nn.Conv2d(outputs, outputs, 3, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    def __init__(self, classes: int, width: int) -> None:
        super().__init__()
        w = [width, 2 * width, 4 * width, 8 * width]
        self.down = nn.ModuleList([double_conv(1, w[0]), double_conv(w[0], w[1])])
        self.down.append(double_conv(w[1], w[2]))
        self.bottom = double_conv(w[2], w[3])
        self.up = nn.ModuleList([nn.ConvTranspose2d(w[i + 1], w[i], 2, stride=2) for i in range(3)])
        self.merge = nn.ModuleList([double_conv(2 * w[i], w[i]) for i in range(3)])
        self.out = nn.Conv2d(w[0], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for layer in self.down:
            x = layer(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for i in (2, 1, 0):
            x = self.merge[i](torch.cat([skips[i], self.up[i](x)], dim=1))
        return self.out(x)


def probabilities(model: nn.Module, gray: np.ndarray, mean: float, std: float) -> np.ndarray:
    """(H*W, classes) softmax probabilities of a 2-D [0, 1] image."""
    height, width = gray.shape
    padded = pad_to(
        gray, math.ceil(height / MULTIPLE) * MULTIPLE, math.ceil(width / MULTIPLE) * MULTIPLE
    )
    x = torch.from_numpy(((padded - mean) / std).astype(np.float32))[None, None]
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)[0, :, :height, :width]
    return probs.permute(1, 2, 0).reshape(height * width, -1).numpy().astype(np.float64)


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


def augment_pair(
    x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random 90-degree rotation and flip (the same for image and mask), gain/bias/gamma on
    the image, per crop of a (n, 1, s, s) batch."""
    xs, ys = [], []
    for i in range(x.shape[0]):
        k = int(torch.randint(0, 4, (1,), generator=generator))
        xi, yi = torch.rot90(x[i], k, (1, 2)), torch.rot90(y[i], k, (0, 1))
        if float(torch.rand(1, generator=generator)) < 0.5:
            xi, yi = torch.flip(xi, (2,)), torch.flip(yi, (1,))
        gain, bias = 0.8 + 0.4 * torch.rand(2, generator=generator)
        xi = xi * gain + (bias - 1.0) * 0.5
        xs.append(xi)
        ys.append(yi)
    return torch.stack(xs), torch.stack(ys)


def train(paths: Paths) -> None:
    started = time.perf_counter()
    hps = read_hyperparameters(paths, HYPERPARAMETERS)
    problem = read_problem(paths, PROBLEM_TYPE)
    indices, lookup = class_positions(problem)
    classes = len(indices)
    if classes < 2:
        raise TrainerError("imgSeg needs at least one foreground label (index > 0)")
    log("hyperparameters: " + " ".join(f"{k}={v}" for k, v in sorted(hps.items())))
    torch_loop.setup_torch(hps["seed"])

    train_examples = read_channel(paths.train_dir, "train", ("image", "mask"))
    val_examples = read_channel(paths.validation_dir, "validation", ("image", "mask"))
    pairs = [load_example(e, "train", lookup) for e in train_examples]
    val_pairs = [load_example(e, "validation", lookup) for e in val_examples]
    class_pixels = sum(np.bincount(m.ravel(), minlength=classes) for _, m in pairs)
    if class_pixels[0] == 0 or not class_pixels[1:].any():
        raise TrainerError("channel train needs both background and foreground pixels")
    log(
        f"examples: train {len(pairs)} validation {len(val_pairs)}; train pixel share per "
        "label "
        + " ".join(
            f"{i}:{n / class_pixels.sum():.3f}" for i, n in zip(indices, class_pixels, strict=True)
        )
    )
    values = np.concatenate([g.ravel() for g, _ in pairs])
    mean, std = float(values.mean()), max(float(values.std()), 1e-3)
    smallest = min(min(g.shape) for g, _ in pairs)
    crop = max(MULTIPLE, min(hps["crop_size"], smallest) // MULTIPLE * MULTIPLE)
    images = [((pad_to(g, crop, crop) - mean) / std).astype(np.float32) for g, _ in pairs]
    masks = [pad_to(m, crop, crop, fill=-100) for _, m in pairs]  # -100: ignored by the loss

    model = UNet(classes, hps["width"])
    generator = torch.Generator().manual_seed(hps["seed"])
    per_epoch = len(pairs) * hps["crops_per_image"]
    batch = max(1, min(hps["batch_size"], per_epoch))

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        owners = np.repeat(np.arange(len(pairs)), hps["crops_per_image"])
        owners = owners[torch.randperm(len(owners), generator=generator).numpy()]
        for start in range(0, len(owners), batch):
            xs, ys = [], []
            for owner in owners[start : start + batch]:
                image, mask = images[owner], masks[owner]
                top = int(torch.randint(0, image.shape[0] - crop + 1, (1,), generator=generator))
                left = int(torch.randint(0, image.shape[1] - crop + 1, (1,), generator=generator))
                xs.append(torch.from_numpy(image[top : top + crop, left : left + crop].copy()))
                ys.append(torch.from_numpy(mask[top : top + crop, left : left + crop].copy()))
            x, y = torch.stack(xs)[:, None], torch.stack(ys)
            if hps["augment"]:
                x, y = augment_pair(x, y, generator)
            yield x, y

    def loss_of(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, y, ignore_index=-100)
        valid = (y >= 0).unsqueeze(1)
        probs = torch.softmax(logits, dim=1)[:, 1:]
        onehot = F.one_hot(y.clamp_min(0), classes).permute(0, 3, 1, 2)[:, 1:].float()
        probs, onehot = probs * valid, onehot * valid
        overlap = (probs * onehot).sum(dim=(0, 2, 3))
        total = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
        return ce + 1 - ((2 * overlap + 1) / (total + 1)).mean()

    def validate(net: nn.Module) -> tuple[float, float]:
        dice, loss = DiceCounter(classes), LossCounter(classes)
        for gray, truth in val_pairs:
            probs = probabilities(net, gray, mean, std)
            loss.add(probs, truth.ravel())
            predicted = postprocess(probs, truth.shape, hps["threshold"], hps["min_object_size"])
            dice.add(truth, predicted)
        return loss.loss(), dice.dice()

    best = torch_loop.fit(
        model,
        batches,
        loss_of,
        validate,
        "val_dice",
        hps,
        steps_per_epoch=math.ceil(per_epoch / batch),
    )
    metrics = {"val_dice": best.score, "val_loss": best.loss, "best_epoch": best.epoch}
    arrays = torch_loop.state_arrays(model)
    arrays["mean"], arrays["std"] = np.float32(mean), np.float32(std)
    save_model(
        paths.model_dir,
        arrays,
        {
            "trainer": "img_seg",
            "format": FORMAT,
            "problemType": PROBLEM_TYPE,
            "labels": [{"index": i, "name": n} for i, n in problem.labels],
            "class_indices": indices,
            "width": hps["width"],
            "threshold": hps["threshold"],
            "min_object_size": hps["min_object_size"],
            "hyperparameters": hps,
            "metrics": metrics,
            "train_examples": len(pairs),
            "validation_examples": len(val_pairs),
        },
    )
    log(
        f"final best_epoch={best.epoch} val_loss={fmt(best.loss)} val_dice={fmt(best.score)} "
        f"train_examples={len(pairs)} validation_examples={len(val_pairs)} "
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
        torch_loop.setup_torch(0)
        self.indices = np.asarray(meta["class_indices"], np.int64)
        self.threshold = float(meta["threshold"])
        self.min_object_size = int(meta["min_object_size"])
        self.mean, self.std = float(arrays.pop("mean")), float(arrays.pop("std"))
        self.net = UNet(len(self.indices), int(meta["width"]))
        torch_loop.load_state(self.net, arrays)
        self.description = f"img_seg model ({len(self.indices) - 1} foreground labels)"

    def segment(self, gray: np.ndarray) -> np.ndarray:
        """Label-index map (same shape) of a 2-D [0, 1] grayscale image."""
        probs = probabilities(self.net, gray, self.mean, self.std)
        positions = postprocess(probs, gray.shape, self.threshold, self.min_object_size)
        return self.indices[positions]

    def predict(self, data: bytes) -> dict[str, Any]:
        gray = to_gray(open_image(data))
        labels = self.segment(gray)
        return {"mask": png_base64(labels), "width": gray.shape[1], "height": gray.shape[0]}

    def response(self, prediction: dict[str, Any]) -> dict[str, Any]:
        return prediction
