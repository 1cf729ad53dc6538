"""Check that fetched bytes are a usable PNG, JPEG or DICOM image (and masks for imgSeg).

Order matters for safety: the format is taken from the magic bytes, the size from the header,
and only an image within the limits is decoded (a 40k x 40k "decompression bomb" is refused
before any pixel is allocated). DICOM is converted to PNG for storage (trainers read PNG/JPEG
only); PNG and JPEG are stored as received, so the sha256 of the source is the dedup key.

Memory is bounded whatever the input: the memory a decode needs is estimated from the header
(width x height x frames x samples x bytes per sample, plus the copies decoding makes) and
reserved from one process-wide `DecodeBudget` (PATIENT_ML_DECODE_MEMORY_BYTES, default 512 MiB)
before any pixel is decoded; an image that needs more than the whole budget is quarantined
(`image_over_memory_budget`), others wait for their turn. A deflated DICOM is inflated as a
stream first to learn its size. DICOM grey levels are rescaled in stripes, never as a whole
float64 copy of the image.
"""

from __future__ import annotations

import hashlib
import io
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from patient_ml.curation.near_duplicates import fingerprint as perceptual_hash
from patient_ml.curation.quarantine import QuarantineError, unexpected_errors_quarantined
from patient_ml.fhir.mapping import IMAGE_CONTENT_TYPES

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
    from PIL import Image
    from pydicom import Dataset

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
STORED_EXT = {"png": "png", "jpeg": "jpg", "dicom": "png"}
STORED_CONTENT_TYPE = {"png": "image/png", "jpeg": "image/jpeg", "dicom": "image/png"}
DEFAULT_DECODE_MEMORY = 512 * 2**20
DEFLATED_EXPLICIT_VR = "1.2.840.10008.1.2.1.99"
_STRIPE_PIXELS = 1 << 20  # DICOM grey levels are rescaled this many pixels at a time
_STRIPE_BYTES = 48 * _STRIPE_PIXELS  # the float64 temporaries of one stripe


class DecodeBudget:
    """Bytes of memory that concurrent decodes may use together (a counting semaphore)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self.peak = 0
        self._cond = threading.Condition()

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        if nbytes > self.total:
            raise QuarantineError(
                "image_over_memory_budget",
                f"decoding needs ~{_mib(nbytes)} MiB, the budget is {_mib(self.total)} MiB",
            )
        with self._cond:
            self._cond.wait_for(lambda: self.used + nbytes <= self.total)
            self.used += nbytes
            self.peak = max(self.peak, self.used)
        try:
            yield
        finally:
            with self._cond:
                self.used -= nbytes
                self._cond.notify_all()


_BUDGET: list[DecodeBudget] = []
_BUDGET_LOCK = threading.Lock()


def decode_budget() -> DecodeBudget:
    """The process-wide budget, sized by PATIENT_ML_DECODE_MEMORY_BYTES (read once)."""
    with _BUDGET_LOCK:
        if not _BUDGET:
            from patient_ml.settings import env_number

            total = env_number(
                "PATIENT_ML_DECODE_MEMORY_BYTES", DEFAULT_DECODE_MEMORY, low=2**24, high=2**40
            )
            _BUDGET.append(DecodeBudget(int(total)))
            _return_large_buffers_to_the_os()
        return _BUDGET[0]


def _return_large_buffers_to_the_os() -> None:
    """Have glibc serve every allocation of 1 MiB or more with its own mmap, unmapped when
    freed. Otherwise glibc raises that threshold up to 32 MiB after large frees, and the
    decoders' buffers of that size (Pillow's 16 MiB blocks, rescaling stripes) stay cached in
    each fetch thread's malloc arena: 8 threads held ~1 GB after decoding, ~350 MB with this
    (`benchmarks/curation.py --hostile`). Not glibc: nothing to do."""
    import ctypes
    import ctypes.util

    m_mmap_threshold = -3  # glibc's malloc.h
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(m_mmap_threshold, 1 << 20)
    except (OSError, AttributeError):
        pass


def _mib(nbytes: int) -> int:
    return -(-nbytes // 2**20)


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
    device: str | None = None  # DICOM: Manufacturer (0008,0070), for subgroups


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
    data: bytes,
    content_type: str | None,
    limits: ImageLimits,
    *,
    fingerprint: str | None = None,
    budget: DecodeBudget | None = None,
) -> DecodedImage:
    """Decode `data` fully (so truncation is caught) and return what curation stores, with
    a perceptual `fingerprint` of the given kind (see `near_duplicates`) when asked.

    Any failure is a QuarantineError: the expected ones with their own reason, an unexpected
    one (a decoder's internal error) as `image_decode_error` with the error's class."""
    with unexpected_errors_quarantined("image_decode_error"):
        return _inspect(data, content_type, limits, fingerprint, budget or decode_budget())


def _inspect(
    data: bytes,
    content_type: str | None,
    limits: ImageLimits,
    fingerprint: str | None,
    budget: DecodeBudget,
) -> DecodedImage:
    fmt = detect_format(data)
    if fmt is None:
        raise QuarantineError("image_decode_failed", "not PNG, JPEG or DICOM (magic bytes)")
    declared = IMAGE_CONTENT_TYPES.get(content_type or "")
    if content_type is not None and declared != fmt:
        raise QuarantineError("image_format_mismatch", f"contentType {content_type}, bytes {fmt}")
    sha = hashlib.sha256(data).hexdigest()

    def finish(decoded: DecodedImage, image: Image.Image) -> DecodedImage:
        if fingerprint is None:
            return decoded
        from dataclasses import replace

        return replace(decoded, fingerprint=perceptual_hash(image, fingerprint))

    if fmt == "dicom":
        return _inspect_dicom(data, sha, limits, budget, finish)
    return _inspect_raster(data, fmt, sha, limits, budget, finish)


def _check_size(width: int, height: int, limits: ImageLimits) -> None:
    if width * height > limits.max_pixels:
        raise QuarantineError(
            "image_too_many_pixels", f"{width}x{height} > {limits.max_pixels} pixels"
        )
    if min(width, height) < limits.min_side:
        raise QuarantineError("image_too_small", f"{width}x{height}, min side {limits.min_side}")


def _inspect_raster(
    data: bytes,
    fmt: str,
    sha: str,
    limits: ImageLimits,
    budget: DecodeBudget,
    finish: Callable[[DecodedImage, Image.Image], DecodedImage],
) -> DecodedImage:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size  # from the header; nothing decoded yet
            bands = len(img.getbands())
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise QuarantineError("image_decode_failed", _short(exc)) from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise QuarantineError("image_too_many_pixels", "Pillow decompression-bomb guard") from None
    _check_size(width, height, limits)
    # The decoded image, a grey copy for the fingerprint; a progressive JPEG also keeps its
    # coefficients (2 bytes each) while decoding.
    decoded_bytes = width * height * bands * _bytes_per_sample(img.mode)
    need = len(data) + decoded_bytes * (3 if fmt == "jpeg" else 2) + width * height
    with budget.reserve(need):
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
        return finish(decoded, img)


def _bytes_per_sample(mode: str) -> int:
    if mode in {"I", "F"} or mode.startswith("I;32"):
        return 4
    return 2 if mode.startswith("I;16") else 1


def _inspect_dicom(
    data: bytes,
    sha: str,
    limits: ImageLimits,
    budget: DecodeBudget,
    finish: Callable[[DecodedImage, Image.Image], DecodedImage],
) -> DecodedImage:
    import pydicom
    from pydicom.errors import InvalidDicomError

    inflated = _inflated_size(data, budget.total)
    try:
        with budget.reserve(len(data) + 2 * inflated):
            ds = pydicom.dcmread(io.BytesIO(data))
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
        bits = int(getattr(ds, "BitsAllocated", 8) or 8)
    except (InvalidDicomError, AttributeError, ValueError, TypeError, EOFError, OSError) as exc:
        raise QuarantineError("image_decode_failed", f"DICOM: {_short(exc)}") from None
    if min(rows, cols, frames, samples, bits) < 1:
        raise QuarantineError("image_decode_failed", "DICOM: zero or negative image attributes")
    _check_size(cols, rows, limits)
    if frames != 1:
        raise QuarantineError("dicom_unsupported", f"{frames} frames; one image per record")
    if samples not in {1, 3} or bits > 32:
        raise QuarantineError("dicom_unsupported", f"{samples} samples of {bits} bits per pixel")
    # From the header, before decoding: the decoded pixels (and a decoder's copy of them),
    # the 8-bit image, its Pillow and PNG copies, and the float64 stripes of the rescaling.
    decoded_bytes = rows * cols * frames * samples * -(-bits // 8)
    need = len(data) + inflated + 2 * decoded_bytes + 3 * rows * cols * samples + _STRIPE_BYTES
    with budget.reserve(need):
        return _decode_dicom(ds, sha, rows, cols, finish)


def _inflated_size(data: bytes, limit: int) -> int:
    """0 unless `data` is a deflated DICOM; then its inflated size, refusing one that
    inflates past `limit` (pydicom would inflate the whole of it in memory)."""
    from pydicom.filereader import _read_file_meta_info

    stream = io.BytesIO(data)
    stream.seek(132)
    try:
        meta = _read_file_meta_info(stream)
    except Exception:  # unreadable meta: dcmread reports it, with its reason
        return 0
    if str(getattr(meta, "TransferSyntaxUID", "")) != DEFLATED_EXPLICIT_VR:
        return 0
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    size, rest = 0, data[stream.tell() :]
    try:
        while rest:
            size += len(inflater.decompress(rest, 1 << 20))
            rest = inflater.unconsumed_tail
            if size > limit // 4:
                raise QuarantineError(
                    "image_over_memory_budget", f"deflated DICOM inflates past {_mib(size)} MiB"
                )
    except zlib.error as exc:
        raise QuarantineError("image_decode_failed", f"DICOM deflate: {_short(exc)}") from None
    return size


def _decode_dicom(
    ds: Dataset,
    sha: str,
    rows: int,
    cols: int,
    finish: Callable[[DecodedImage, Image.Image], DecodedImage],
) -> DecodedImage:
    import numpy as np

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
    del pixels
    from PIL import Image

    image = Image.fromarray(array, mode=mode)
    del array
    manufacturer = str(ds.get("Manufacturer") or "").strip() or None
    decoded = DecodedImage(
        "dicom", cols, rows, mode, sha, _to_png(image), "png", "image/png", device=manufacturer
    )
    return finish(decoded, image)


def _monochrome_to_uint8(
    ds: Dataset, pixels: NDArray[np.generic], photometric: str
) -> NDArray[np.uint8]:
    """Modality LUT (rescale slope/intercept), the first VOI window if any, then 0..255.

    Per-pixel operations, so they run on stripes of rows: a pass for the range, a pass to
    scale; the float64 temporaries stay at a stripe's size whatever the image's."""
    import numpy as np
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    windowed = getattr(ds, "WindowCenter", None) is not None or getattr(ds, "VOILUTSequence", None)

    def values(stripe: NDArray[np.generic]) -> NDArray[np.float64]:
        out = apply_modality_lut(stripe, ds)
        if windowed:
            out = apply_voi_lut(out, ds, index=0)
        return np.asarray(out, dtype=np.float64)

    step = max(1, _STRIPE_PIXELS // max(1, pixels.shape[1]))
    stripes = [slice(r, r + step) for r in range(0, pixels.shape[0], step)]
    low, high = float("inf"), float("-inf")
    for rows in stripes:
        part = values(pixels[rows])
        low, high = min(low, float(part.min())), max(high, float(part.max()))
    result = np.empty(pixels.shape, dtype=np.uint8)
    for rows in stripes:
        part = values(pixels[rows])
        scaled = np.zeros_like(part) if high <= low else (part - low) / (high - low) * 255.0
        if photometric == "MONOCHROME1":
            scaled = 255.0 - scaled
        result[rows] = np.rint(scaled)
    return result


def _to_png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()


def inspect_mask(
    data: bytes, *, width: int, height: int, allowed_values: set[int] | frozenset[int]
) -> MaskInfo:
    """A mask must be a PNG of the image's size whose pixel values are label indices or 0."""
    with unexpected_errors_quarantined("image_decode_error"):
        return _inspect_mask(data, width, height, allowed_values, decode_budget())


def _inspect_mask(
    data: bytes,
    width: int,
    height: int,
    allowed_values: set[int] | frozenset[int],
    budget: DecodeBudget,
) -> MaskInfo:
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
        need = len(data) + 3 * width * height * _bytes_per_sample(img.mode)
        with budget.reserve(need):
            img.load()
            values = tuple(int(v) for v in np.unique(np.asarray(img)))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise QuarantineError("invalid_mask", _short(exc)) from None
    unexpected = sorted(set(values) - set(allowed_values) - {0})
    if unexpected:
        shown = ", ".join(map(str, unexpected[:5]))
        raise QuarantineError("invalid_mask", f"values {shown} are not label indices")
    return MaskInfo(hashlib.sha256(data).hexdigest(), values)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
