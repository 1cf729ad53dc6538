"""Saliency maps computed by the platform through the serving contract, and how faithful they
are.

**Occlusion sensitivity** (Zeiler & Fergus 2014) needs nothing from the container but
`/invocations`: the image is cut into a `grid` x `grid` mesh of cells; for each cell a copy with
that cell filled with the image's mean is sent (all copies of an image batched as
`{"instances": [...]}`, at most `MAX_BATCH` per request), and the cell's saliency is the drop of
the explained label's probability: p(image) - p(image with the cell hidden). Model-agnostic, it
works for any container.

**The container's own map** (e.g. Grad-CAM of the reference classifier) comes from the optional
route `POST /explanations` when the container answers it (`serving.client.explain`); it is
resized to the image and averaged per cell, so both maps are judged on the same cells.

**Faithfulness: deletion AUC** (Petsiuk et al. 2018, RISE). Saliency maps are known to mislead
(Adebayo et al. 2018): a map that looks plausible need not say what the model used. So every
map is tested: the cells are hidden cumulatively in the map's order (most salient first), in
`steps` equal steps, the explained label's probability is measured after each step, and the
area under that curve (x: share of the image hidden, 0..1) is the map's deletion AUC. The same
is done for `random_orders` random orders (seeded by the example) and averaged. A faithful map
drives the probability down faster than chance: its AUC is below the random one. Reported:
both AUCs, `difference` = random - map (above 0: better than chance) and `ratio` = map / random
(below 1: better than chance).
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from patient_ml.exceptions import PatientMLError

MAX_BATCH = 64  # images per request (the reference containers accept 64)
MAX_BATCH_BYTES = 16 * 1024 * 1024  # encoded image bytes per request (the contract allows 50 MB)

Probabilities = Callable[[list[bytes]], np.ndarray]
"""Sends encoded images to the served model: their probabilities over the dataset's labels
(rows normalised to 1, columns in label order)."""


class SaliencyError(PatientMLError):
    """A saliency map could not be computed for an image."""


@dataclass(frozen=True)
class SaliencyOptions:
    grid: int = 8  # cells per side
    steps: int = 16  # deletion curve: hide the cells in this many equal steps
    random_orders: int = 3  # random deletion orders averaged for the baseline
    max_side: int = 256  # the image is scaled down to at most this many pixels per side first

    def __post_init__(self) -> None:
        if not 2 <= self.grid <= 32:
            raise ValueError(f"grid={self.grid}: use 2..32 cells per side")
        if not 1 <= self.steps <= self.grid * self.grid:
            raise ValueError(f"steps={self.steps}: use 1..grid*grid")
        if not 1 <= self.random_orders <= 16:
            raise ValueError(f"random_orders={self.random_orders}: use 1..16")
        if not 16 <= self.max_side <= 4096:
            raise ValueError(f"max_side={self.max_side}: use 16..4096")


@dataclass
class Counter:
    """Images sent and seconds spent (the cost of the maps)."""

    images: int = 0
    requests: int = 0
    seconds: float = 0.0
    calls: list[float] = field(default_factory=list)


def batched(probabilities: Probabilities, images: list[bytes], counter: Counter) -> np.ndarray:
    """`probabilities` of all `images`, in requests of at most MAX_BATCH images and
    MAX_BATCH_BYTES bytes."""
    out = []
    start = 0
    while start < len(images):
        end, size = start, 0
        while end < len(images) and end - start < MAX_BATCH:
            if end > start and size + len(images[end]) > MAX_BATCH_BYTES:
                break
            size += len(images[end])
            end += 1
        began = time.monotonic()
        out.append(probabilities(images[start:end]))
        counter.seconds += time.monotonic() - began
        counter.requests += 1
        counter.images += end - start
        start = end
    return np.concatenate(out) if out else np.zeros((0, 0))


# --- images ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pixels:
    """An image's pixel array as decoded (mode kept: what the model would have been sent) and
    how to encode a changed copy of it."""

    array: np.ndarray  # (h, w) or (h, w, c)
    mode: str

    @classmethod
    def of(cls, data: bytes, max_side: int | None = None) -> Pixels:
        """The decoded image; with `max_side`, scaled down (antialiased) to at most that many
        pixels on its longer side."""
        try:
            image: Image.Image = Image.open(io.BytesIO(data))
            image.load()
        except Exception as exc:
            raise SaliencyError(
                f"The image cannot be decoded for occlusion ({type(exc).__name__}).",
                fix="store snapshot images as PNG or JPEG (curation converts DICOM to PNG)",
            ) from None
        if image.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1", "LA", "RGBA"):
            image = image.convert("RGB" if image.mode not in ("1", "LA") else "L")
        if image.mode == "I;16B":
            image = image.convert("I;16")
        mode = image.mode
        if max_side is not None and max(image.size) > max_side:
            scale = max_side / max(image.size)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            if mode == "I;16":  # resampled as 32-bit integers, stored back as 16-bit
                wide = image.convert("I").resize(size, Image.Resampling.LANCZOS)
                array = np.clip(np.asarray(wide), 0, 65535).astype(np.uint16)
                return cls(array, mode)
            image = image.resize(size, Image.Resampling.LANCZOS)
        return cls(np.asarray(image).copy(), mode)

    @property
    def height(self) -> int:
        return int(self.array.shape[0])

    @property
    def width(self) -> int:
        return int(self.array.shape[1])

    def fill(self) -> np.ndarray:
        """What hides a cell: the image's mean (per channel)."""
        axes = (0, 1)
        return self.array.mean(axis=axes).astype(self.array.dtype)

    def encode(self, array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()

    def gray(self) -> np.ndarray:
        """Grey levels in [0, 1] for display (min-max of the image)."""
        values = self.array.astype(np.float64)
        if values.ndim == 3:
            values = values[..., :3].mean(axis=2)
        low, high = float(values.min()), float(values.max())
        return (values - low) / (high - low) if high > low else np.zeros_like(values)


def cells(height: int, width: int, grid: int) -> list[tuple[slice, slice]]:
    """The grid's cells in row-major order (edges spread as evenly as integers allow)."""
    rows = np.linspace(0, height, grid + 1).round().astype(int)
    cols = np.linspace(0, width, grid + 1).round().astype(int)
    return [
        (slice(rows[r], rows[r + 1]), slice(cols[c], cols[c + 1]))
        for r in range(grid)
        for c in range(grid)
    ]


def hidden(pixels: Pixels, mesh: Sequence[tuple[slice, slice]], which: Sequence[int]) -> bytes:
    """The image with the cells `which` filled with its mean, encoded."""
    array = pixels.array.copy()
    fill = pixels.fill()
    for cell in which:
        array[mesh[cell]] = fill
    return pixels.encode(array)


def per_cell(values: np.ndarray, grid: int) -> np.ndarray:
    """A map on any grid resampled to grid x grid cells (bilinear, then the cell means)."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0)
    fine = grid * 8
    image = Image.fromarray(values).resize((fine, fine), Image.Resampling.BILINEAR)
    return np.asarray(image, np.float64).reshape(grid, 8, grid, 8).mean(axis=(1, 3))


# --- maps and their faithfulness -------------------------------------------------------


def deletion_auc(curve: Sequence[float]) -> float:
    """Area under the probability curve over the share hidden (0..1), trapezoids."""
    y = np.asarray(curve, dtype=np.float64)
    return float(((y[1:] + y[:-1]) / 2).sum() / (len(y) - 1))


def deletion_steps(order: Sequence[int], steps: int) -> list[list[int]]:
    """The cells hidden after each of `steps` steps (cumulative; the last hides all)."""
    ends = np.linspace(0, len(order), steps + 1).round().astype(int)[1:]
    return [list(order[:end]) for end in ends]


def order_of(scores: np.ndarray) -> list[int]:
    """Cells by decreasing saliency (ties: row-major order)."""
    flat = np.asarray(scores, dtype=np.float64).ravel()
    return [int(i) for i in np.argsort(-flat, kind="stable")]


def seed_of(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


@dataclass(frozen=True)
class Faithfulness:
    deletion_auc: float
    random_deletion_auc: float
    random_orders: int
    steps: int
    curve: tuple[float, ...]
    random_curve: tuple[float, ...]

    def wire(self) -> dict[str, Any]:
        return {
            "deletionAuc": round(self.deletion_auc, 4),
            "randomDeletionAuc": round(self.random_deletion_auc, 4),
            "difference": round(self.random_deletion_auc - self.deletion_auc, 4),
            "ratio": round(self.deletion_auc / self.random_deletion_auc, 4)
            if self.random_deletion_auc > 0
            else None,
            "randomOrders": self.random_orders,
            "steps": self.steps,
            "curve": [round(v, 4) for v in self.curve],
            "randomCurve": [round(v, 4) for v in self.random_curve],
        }


@dataclass(frozen=True)
class SaliencyMap:
    method: str  # occlusion | grad-cam (or the container's own name)
    cells: np.ndarray  # grid x grid, the order of deletion
    display: np.ndarray  # the map at its own resolution, for the overlay
    faithfulness: Faithfulness


@dataclass(frozen=True)
class Explained:
    """The maps of one image for one label (its position in the label order)."""

    probability: float  # of the explained label for the unchanged image
    maps: tuple[SaliencyMap, ...]


def explain_image(
    data: bytes,
    position: int,
    probabilities: Probabilities,
    *,
    options: SaliencyOptions,
    own_map: np.ndarray | None = None,
    own_method: str = "grad-cam",
    seed: int = 0,
    counter: Counter | None = None,
) -> Explained:
    """Occlusion map of label `position` for the encoded image `data`, the container's own map
    when given (`own_map`, any grid), and the deletion AUC of each against random orders."""
    counter = counter if counter is not None else Counter()
    pixels = Pixels.of(data, options.max_side)
    grid = options.grid
    mesh = cells(pixels.height, pixels.width, grid)
    if pixels.height < grid or pixels.width < grid:
        raise SaliencyError(
            f"The image ({pixels.width}x{pixels.height}) is smaller than the occlusion grid "
            f"({grid}x{grid}).",
            fix="use a smaller grid",
        )
    # 1. occlusion: the unchanged image and one copy per hidden cell, in one batch
    batch = [pixels.encode(pixels.array)] + [hidden(pixels, mesh, [c]) for c in range(len(mesh))]
    probs = batched(probabilities, batch, counter)[:, position]
    base = float(probs[0])
    occlusion = (base - probs[1:]).reshape(grid, grid)
    # 2. deletion curves: each map's order, and random orders (seeded by the example)
    # (method, cells, display): the order of deletion is that of `cells`
    found_maps = [("occlusion", occlusion, occlusion)]
    if own_map is not None:
        own = np.asarray(own_map, np.float64)
        found_maps.append((own_method, per_cell(own, grid), own))
    orders = [(method, order_of(values)) for method, values, _ in found_maps]
    rng = np.random.default_rng(seed)
    randoms = [[int(i) for i in rng.permutation(grid * grid)] for _ in range(options.random_orders)]
    curves_in: list[bytes] = []
    for order in [o for _, o in orders] + randoms:
        curves_in += [hidden(pixels, mesh, which) for which in deletion_steps(order, options.steps)]
    found = batched(probabilities, curves_in, counter)[:, position]
    curves = [
        [base, *found[i * options.steps : (i + 1) * options.steps].tolist()]
        for i in range(len(orders) + len(randoms))
    ]
    random_curve = np.mean(curves[len(orders) :], axis=0)
    random_auc = float(np.mean([deletion_auc(c) for c in curves[len(orders) :]]))
    maps = []
    for i, (method, values, display) in enumerate(found_maps):
        faith = Faithfulness(
            deletion_auc=deletion_auc(curves[i]),
            random_deletion_auc=random_auc,
            random_orders=options.random_orders,
            steps=options.steps,
            curve=tuple(curves[i]),
            random_curve=tuple(float(v) for v in random_curve),
        )
        maps.append(SaliencyMap(method, values, display, faith))
    return Explained(base, tuple(maps))


def own_map_of(answer: dict[str, Any] | None, index: int) -> tuple[np.ndarray, str] | None:
    """The map in a container's `/explanations` answer, checked; None when there is none."""
    if answer is None:
        return None
    values = answer.get("values")
    method = str(answer.get("method") or "container")[:40]
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        array = np.zeros(0)
    if array.ndim != 2 or min(array.shape) < 1 or not np.isfinite(array).all():
        raise SaliencyError(
            f"The container's {method} map for label {index} is not a finite 2-D grid of numbers.",
            fix='answer "values": [[row of numbers], ...] on /explanations',
        )
    return array, method


# --- pictures ----------------------------------------------------------------------------

THUMBNAIL = 192  # longest side of the gallery's pictures, pixels


def _thumb_size(height: int, width: int) -> tuple[int, int]:
    scale = THUMBNAIL / max(height, width)
    return max(1, round(width * scale)), max(1, round(height * scale))


def thumbnail_png(pixels: Pixels) -> bytes:
    gray = (pixels.gray() * 255).round().astype(np.uint8)
    image = Image.fromarray(gray).resize(
        _thumb_size(pixels.height, pixels.width), Image.Resampling.LANCZOS
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _heat(values: np.ndarray) -> np.ndarray:
    """A colour map (dark blue -> red -> yellow) of values in [0, 1], (h, w, 3) floats."""
    stops = np.array([[0.0, 0.0, 0.3], [0.1, 0.2, 0.9], [0.9, 0.1, 0.1], [1.0, 0.95, 0.2]])
    x = np.clip(values, 0, 1) * (len(stops) - 1)
    low = np.floor(x).astype(int).clip(0, len(stops) - 2)
    t = (x - low)[..., None]
    return stops[low] * (1 - t) + stops[low + 1] * t


def overlay_png(pixels: Pixels, saliency: np.ndarray, alpha: float = 0.5) -> bytes:
    """The thumbnail with the map over it: positive saliency only (what lowers the label's
    probability when hidden), scaled by the map's maximum, upsampled bilinearly."""
    size = _thumb_size(pixels.height, pixels.width)
    positive = np.clip(np.asarray(saliency, dtype=np.float32), 0, None)
    top = float(positive.max())
    scaled = positive / top if top > 0 else positive
    upsampled = np.asarray(
        Image.fromarray(scaled).resize(size, Image.Resampling.BILINEAR), np.float64
    )
    gray = (
        np.asarray(
            Image.fromarray((pixels.gray() * 255).round().astype(np.uint8)).resize(
                size, Image.Resampling.LANCZOS
            ),
            np.float64,
        )[..., None].repeat(3, axis=2)
        / 255
    )
    weight = alpha * upsampled[..., None]
    blended = gray * (1 - weight) + _heat(upsampled) * weight
    buffer = io.BytesIO()
    Image.fromarray((blended * 255).round().astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()
