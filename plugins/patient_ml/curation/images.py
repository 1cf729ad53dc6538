"""Check that fetched bytes are a usable PNG, JPEG or DICOM image (and masks for imgSeg).

Order matters for safety: the format is taken from the magic bytes, the size from the header,
and only an image within the limits is decoded (a 40k x 40k "decompression bomb" is refused
before any pixel is allocated). DICOM is converted to PNG for storage (trainers read PNG/JPEG
only); PNG and JPEG are stored as received, so the sha256 of the source is the dedup key.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from patient_ml.curation.quarantine import QuarantineError
from patient_ml.fhir.mapping import IMAGE_CONTENT_TYPES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
STORED_EXT = {"png": "png", "jpeg": "jpg", "dicom": "png"}
STORED_CONTENT_TYPE = {"png": "image/png", "jpeg": "image/jpeg", "dicom": "image/png"}


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int = 50_000_000
    min_side: int = 8


@dataclass(frozen=True)
class DecodedImage:
    format: str  # png | jpeg | dicom (of the source bytes)
    width: int
    height: int
    mode: str  # Pillow mode of the stored image (L, RGB, I;16, ...)
    sha256: str  # of the source bytes
    stored_bytes: bytes
    stored_ext: str  # png | jpg
    stored_content_type: str
    fingerprint: bytes | None = None  # perceptual hash (near_duplicates), if asked for


@dataclass(frozen=True)
class MaskInfo:
    sha256: str
    values: tuple[int, ...]  # distinct pixel values present


def detect_format(data: bytes) -> str | None:
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    return None


def inspect_image(
    data: bytes, content_type: str | None, limits: ImageLimits, *, fingerprint: str | None = None
) -> DecodedImage:
    """Decode `data` fully (so truncation is caught) and return what curation stores, with
    a perceptual `fingerprint` of the given kind (see `near_duplicates`) when asked."""
    fmt = detect_format(data)
    if fmt is None:
        raise QuarantineError("image_decode_failed", "not PNG, JPEG or DICOM (magic bytes)")
    declared = IMAGE_CONTENT_TYPES.get(content_type or "")
    if content_type is not None and declared != fmt:
        raise QuarantineError("image_format_mismatch", f"contentType {content_type}, bytes {fmt}")
    sha = hashlib.sha256(data).hexdigest()
    if fmt == "dicom":
        decoded, image = _inspect_dicom(data, sha, limits)
    else:
        decoded, image = _inspect_raster(data, fmt, sha, limits)
    if fingerprint is None:
        return decoded
    from dataclasses import replace

    from patient_ml.curation.near_duplicates import fingerprint as perceptual_hash

    return replace(decoded, fingerprint=perceptual_hash(image, fingerprint))


def _check_size(width: int, height: int, limits: ImageLimits) -> None:
    if width * height > limits.max_pixels:
        raise QuarantineError(
            "image_too_many_pixels", f"{width}x{height} > {limits.max_pixels} pixels"
        )
    if min(width, height) < limits.min_side:
        raise QuarantineError("image_too_small", f"{width}x{height}, min side {limits.min_side}")


def _inspect_raster(
    data: bytes, fmt: str, sha: str, limits: ImageLimits
) -> tuple[DecodedImage, object]:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size  # from the header; nothing decoded yet
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise QuarantineError("image_decode_failed", _short(exc)) from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise QuarantineError("image_too_many_pixels", "Pillow decompression-bomb guard") from None
    _check_size(width, height, limits)
    try:
        img.load()
    except OSError as exc:
        reason = "image_truncated" if "truncated" in str(exc).lower() else "image_decode_failed"
        raise QuarantineError(reason, _short(exc)) from None
    except (SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise QuarantineError("image_decode_failed", _short(exc)) from None
    if fmt == "jpeg" and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        # Pillow pads a JPEG cut inside the last scan with grey instead of failing.
        raise QuarantineError("image_truncated", "JPEG has no end-of-image marker")
    decoded = DecodedImage(
        fmt, width, height, img.mode, sha, data, STORED_EXT[fmt], STORED_CONTENT_TYPE[fmt]
    )
    return decoded, img


def _inspect_dicom(data: bytes, sha: str, limits: ImageLimits) -> tuple[DecodedImage, object]:
    import numpy as np
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (InvalidDicomError, AttributeError, ValueError, TypeError, EOFError, OSError) as exc:
        raise QuarantineError("image_decode_failed", f"DICOM: {_short(exc)}") from None
    _check_size(cols, rows, limits)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames != 1:
        raise QuarantineError("dicom_unsupported", f"{frames} frames; one image per record")
    try:
        pixels = ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
        raise QuarantineError(
            "dicom_unsupported", f"transfer syntax {syntax}: {_short(exc)}"
        ) from None
    except (ValueError, AttributeError, TypeError, EOFError) as exc:
        raise QuarantineError("image_truncated", f"DICOM pixel data: {_short(exc)}") from None
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if pixels.ndim == 3 and photometric in {"RGB", "YBR_FULL", "YBR_FULL_422"}:
        from pydicom.pixels import convert_color_space

        if photometric != "RGB":
            pixels = convert_color_space(pixels, photometric, "RGB")
        array, mode = np.asarray(pixels, dtype=np.uint8), "RGB"
    elif pixels.ndim == 2 and photometric.startswith("MONOCHROME"):
        array, mode = _monochrome_to_uint8(ds, pixels, photometric), "L"
    else:
        raise QuarantineError("dicom_unsupported", f"{photometric} with shape {pixels.shape}")
    from PIL import Image

    image = Image.fromarray(array, mode=mode)
    decoded = DecodedImage("dicom", cols, rows, mode, sha, _to_png(image), "png", "image/png")
    return decoded, image


def _monochrome_to_uint8(ds: object, pixels: object, photometric: str) -> object:
    """Modality LUT (rescale slope/intercept), the first VOI window if any, then 0..255."""
    import numpy as np
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(pixels, ds)
    if getattr(ds, "WindowCenter", None) is not None or getattr(ds, "VOILUTSequence", None):
        values = apply_voi_lut(values, ds, index=0)
    values = np.asarray(values, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = np.zeros_like(values) if high <= low else (values - low) / (high - low) * 255.0
    if photometric == "MONOCHROME1":
        scaled = 255.0 - scaled
    return np.rint(scaled).astype(np.uint8)


def _to_png(image: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)  # type: ignore[attr-defined]
    return out.getvalue()


def inspect_mask(
    data: bytes, *, width: int, height: int, allowed_values: set[int] | frozenset[int]
) -> MaskInfo:
    """A mask must be a PNG of the image's size whose pixel values are label indices or 0."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if not data.startswith(PNG_MAGIC):
        raise QuarantineError("invalid_mask", "not a PNG")
    try:
        img = Image.open(io.BytesIO(data))
        if img.size != (width, height):
            raise QuarantineError(
                "invalid_mask", f"mask {img.size[0]}x{img.size[1]}, image {width}x{height}"
            )
        if img.mode not in {"1", "L", "P", "I", "I;16", "I;16B"}:
            raise QuarantineError("invalid_mask", f"mode {img.mode}; one channel expected")
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise QuarantineError("invalid_mask", _short(exc)) from None
    pixels = np.asarray(img)
    values = tuple(int(v) for v in np.unique(pixels))
    unexpected = sorted(set(values) - set(allowed_values) - {0})
    if unexpected:
        shown = ", ".join(map(str, unexpected[:5]))
        raise QuarantineError("invalid_mask", f"values {shown} are not label indices")
    return MaskInfo(hashlib.sha256(data).hexdigest(), values)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
