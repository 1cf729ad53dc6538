"""Nuclei tiles with masks from the stardist sample image, as FHIR data (imgSeg).

`stardist==0.9.2` (installed with --no-deps, so `import stardist` fails; the files are found
with `importlib.metadata`) ships `stardist/data/images/img2d.tif`, a 512x512 16-bit
fluorescence microscopy image, and `mask2d.tif`, its nucleus instance mask (0 = background,
1..n = one nucleus each). They feed the example dataset `nuclei-segmentation`
(include/configs/nuclei_dataset.yaml): DocumentReference type SNOMED CT 714797009, label 1
`nucleus`.

- The image is cut into square tiles (`--tile`, default 128 -> 16 tiles; 64 -> 64 tiles; only
  whole tiles, row by row). Intensities are scaled to 8-bit grayscale between the 1st and the
  99.8th percentile of the WHOLE image (one scale for all tiles) and written as PNG.
- The instance mask becomes a binary PNG of the same size: 0 background, 1 nucleus.

Patients are SYNTHETIC: the tiles all come from one image of one specimen; runs of 1-4
consecutive tiles (row-major order, run length drawn from a RNG seeded with `--seed`) are
assigned to one made-up patient, so patient-level splits have something to split.
"""

from __future__ import annotations

import io
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image

from include.sample_data.output import DatasetSpec, SampleImage

PACKAGE = "stardist"
IMAGE_FILE = "stardist/data/images/img2d.tif"
MASK_FILE = "stardist/data/images/mask2d.tif"
LABELS = {1: "nucleus"}
DEFAULT_TILE = 128
LOW_PERCENTILE, HIGH_PERCENTILE = 1.0, 99.8
GROUPING_NOTE = (
    "SYNTHETIC patients: all tiles come from one stardist sample image; runs of consecutive "
    "tiles (row-major order, run length drawn from a seeded RNG) are assigned to one made-up "
    "patient."
)


def source_files() -> tuple[Path, Path, str]:
    """The image and mask TIFF files of the installed stardist package and its version."""
    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise SystemExit(
            "The nuclei images come from the PyPI package stardist==0.9.2, which is not "
            "installed. Fix: .venv/bin/pip install --no-deps stardist==0.9.2 (or `make setup`)."
        ) from None
    image, mask = (Path(str(dist.locate_file(name))) for name in (IMAGE_FILE, MASK_FILE))
    for path in (image, mask):
        if not path.is_file():
            raise SystemExit(f"stardist {dist.version} has no {path.name} at {path}.")
    return image, mask, dist.version


def read_tiff(path: Path) -> np.ndarray:
    """A single-page 2-D TIFF as an array (Pillow reads stardist's 16-bit files)."""
    with Image.open(path) as img:
        return np.asarray(img)


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Scale linearly so the 1st..99.8th percentile spans 0..255 (outliers clipped)."""
    low, high = np.percentile(pixels.astype(np.float64), [LOW_PERCENTILE, HIGH_PERCENTILE])
    scaled = (pixels.astype(np.float64) - low) / max(high - low, 1e-12)
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def png(pixels: np.ndarray) -> bytes:
    """An 8-bit single-channel PNG."""
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def tiles(
    image: np.ndarray, mask: np.ndarray, size: int
) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """(y, x, image tile, binary mask tile) for every whole `size` x `size` tile, row by row."""
    if image.shape != mask.shape or image.ndim != 2:
        raise ValueError(f"image {image.shape} and mask {mask.shape} must be equal 2-D shapes")
    height, width = image.shape
    if not 8 <= size <= min(height, width):
        raise ValueError(f"--tile {size}: give 8..{min(height, width)} pixels")
    binary = (mask > 0).astype(np.uint8)
    return [
        (y, x, image[y : y + size, x : x + size], binary[y : y + size, x : x + size])
        for y in range(0, height - size + 1, size)
        for x in range(0, width - size + 1, size)
    ]


def spec(version: str) -> DatasetSpec:
    return DatasetSpec(
        source="nuclei",
        dataset_name="nuclei-segmentation",
        problem_type="imgSeg",
        type_coding={
            "system": "http://snomed.info/sct",
            "code": "714797009",
            "display": "Fluorescence microscopy image",
        },
        label_system="urn:patient-ml:labels:nuclei-segmentation",
        labels=dict(LABELS),
        package=PACKAGE,
        package_version=version,
        description="stardist img2d.tif fluorescence microscopy tile",
        grouping_note=GROUPING_NOTE,
    )


def sample(tile: int = DEFAULT_TILE) -> tuple[DatasetSpec, list[SampleImage]]:
    """The dataset spec and the tiles (8-bit PNG) with their binary masks (PNG)."""
    image_path, mask_path, version = source_files()
    image = to_uint8(read_tiff(image_path))
    images = [
        SampleImage(
            key=f"nuclei/img2d.tif/tile{tile}/y{y:04d}-x{x:04d}",
            group="img2d",
            stem=f"img2d_t{tile}_y{y:04d}_x{x:04d}",
            title=f"img2d.tif tile y={y} x={x} ({tile}x{tile})",
            data=png(pixels),
            mask=png(mask),
        )
        for y, x, pixels, mask in tiles(image, read_tiff(mask_path), tile)
    ]
    return spec(version), images


if __name__ == "__main__":
    import sys

    from include.sample_data.__main__ import main

    sys.exit(main(["build", "nuclei", *sys.argv[1:]]))
