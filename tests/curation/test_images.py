"""Image and mask checks on real encoded bytes: formats, limits, truncation, DICOM."""

from __future__ import annotations

import hashlib
import io
import struct
import tracemalloc
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

from patient_ml.curation import images
from patient_ml.curation.images import (
    DecodeBudget,
    ImageLimits,
    detect_format,
    inspect_image,
    inspect_mask,
)
from patient_ml.curation.quarantine import QuarantineError
from patient_ml.exceptions import PatientMLError

LIMITS = ImageLimits(max_pixels=1_000_000, min_side=8)


def encode(array: np.ndarray, fmt: str, mode: str = "L") -> bytes:
    out = io.BytesIO()
    Image.fromarray(array, mode=mode).save(out, format=fmt)
    return out.getvalue()


def gradient(h: int = 32, w: int = 48) -> np.ndarray:
    return (np.arange(h * w, dtype=np.uint32).reshape(h, w) % 251).astype(np.uint8)


def reason(data: bytes, content_type: str | None = None, limits: ImageLimits = LIMITS) -> str:
    with pytest.raises(QuarantineError) as info:
        inspect_image(data, content_type, limits)
    return info.value.reason


@pytest.mark.parametrize(
    "fmt,ctype,ext", [("PNG", "image/png", "png"), ("JPEG", "image/jpeg", "jpg")]
)
def test_png_and_jpeg_are_stored_as_received(fmt: str, ctype: str, ext: str) -> None:
    data = encode(gradient(), fmt)
    info = inspect_image(data, ctype, LIMITS)
    assert (info.width, info.height, info.mode) == (48, 32, "L")
    assert info.stored_bytes == data and info.stored_ext == ext
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.stored_content_type == ctype


def test_content_type_may_be_absent_and_is_detected() -> None:
    assert inspect_image(encode(gradient(), "PNG"), None, LIMITS).format == "png"


def test_declared_type_must_match_the_bytes() -> None:
    assert reason(encode(gradient(), "PNG"), "image/jpeg") == "image_format_mismatch"


def test_garbage_and_other_formats_are_refused() -> None:
    assert reason(b"hello world" * 20) == "image_decode_failed"
    assert reason(encode(gradient(), "GIF", "L")) == "image_decode_failed"
    assert detect_format(b"") is None


def test_truncated_png_and_jpeg() -> None:
    png = encode(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8), "PNG")
    assert reason(png[: len(png) // 2], "image/png") in {"image_truncated", "image_decode_failed"}
    jpeg = encode(np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8), "JPEG")
    assert reason(jpeg[: len(jpeg) - 200], "image/jpeg") == "image_truncated"


def test_size_limits_are_checked_from_the_header_before_decoding() -> None:
    assert reason(encode(gradient(4, 100), "PNG")) == "image_too_small"
    small_limits = ImageLimits(max_pixels=1000, min_side=1)
    assert reason(encode(gradient(), "PNG"), limits=small_limits) == "image_too_many_pixels"


def test_decompression_bomb_header_is_refused_without_allocating() -> None:
    # A valid PNG header claiming 60000 x 60000 pixels, with a tiny (bogus) IDAT.
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 100))
        + chunk(b"IEND", b"")
    )
    assert reason(bomb, "image/png") == "image_too_many_pixels"


def test_dicom_is_converted_to_an_8bit_png() -> None:
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    info = inspect_image(data, "application/dicom", LIMITS)
    assert info.format == "dicom" and info.stored_ext == "png"
    assert info.stored_content_type == "image/png"
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    png = Image.open(io.BytesIO(info.stored_bytes))
    assert png.size == (info.width, info.height) == (128, 128)
    pixels = np.asarray(png)
    assert pixels.dtype == np.uint8 and pixels.min() == 0 and pixels.max() == 255
    # Same input, same stored bytes (content addressing relies on it).
    assert inspect_image(data, None, LIMITS).stored_bytes == info.stored_bytes


def test_dicom_rle_is_decoded_by_pydicom() -> None:
    data = Path(get_testdata_file("MR_small_RLE.dcm")).read_bytes()
    assert inspect_image(data, "application/dicom", LIMITS).format == "dicom"


def test_dicom_with_undecodable_pixel_data() -> None:
    # JPEG-LS needs an optional decoder plugin that is not installed.
    ds = pydicom.dcmread(get_testdata_file("JPEG2000.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.80"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    assert reason(out.getvalue(), "application/dicom") == "dicom_unsupported"


def test_truncated_dicom() -> None:
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    assert reason(data[: len(data) - 4000], "application/dicom") in {
        "image_truncated",
        "image_decode_failed",
    }


def test_mask_checks() -> None:
    mask = np.zeros((32, 48), dtype=np.uint8)
    mask[4:10, 4:10] = 1
    data = encode(mask, "PNG")
    info = inspect_mask(data, width=48, height=32, allowed_values={1})
    assert info.values == (0, 1) and info.sha256 == hashlib.sha256(data).hexdigest()

    def mask_reason(data: bytes, **kw) -> str:
        args = {"width": 48, "height": 32, "allowed_values": {1}} | kw
        with pytest.raises(QuarantineError) as err:
            inspect_mask(data, **args)
        assert err.value.reason == "invalid_mask"
        return err.value.detail

    assert "48x32" in mask_reason(data, width=50)
    mask[0, 0] = 7
    assert "7" in mask_reason(encode(mask, "PNG"))
    assert "PNG" in mask_reason(encode(mask, "JPEG"))
    rgb = np.zeros((32, 48, 3), dtype=np.uint8)
    assert "mode" in mask_reason(encode(rgb, "PNG", "RGB"))


# --------------------------------------------------------------------------- memory


def dicom(rows: int, cols: int, syntax: str = ExplicitVRLittleEndian, frames: int = 1) -> bytes:
    """A 16-bit MONOCHROME2 DICOM with a rescale, almost all zeros (so it compresses well)."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, generate_uid()
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = "1.5", "-10"
    if frames > 1:
        ds.NumberOfFrames = frames
    pixels = np.zeros((frames, rows, cols) if frames > 1 else (rows, cols), dtype=np.uint16)
    pixels.flat[::997] = np.arange(pixels.size // 997 + 1, dtype=np.uint16)[
        : pixels.size // 997 + 1
    ]
    ds.PixelData = pixels.tobytes()
    if syntax == RLELossless:
        ds.compress(RLELossless, pixels)
    else:
        ds.file_meta.TransferSyntaxUID = syntax
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_dicom_rescaling_uses_no_whole_image_float64_copies() -> None:
    """A 2000x2000 16-bit RLE DICOM (~130 kB): 8 MB of pixels. Before, the rescaling made
    float64 copies of the whole image (3 x 32 MB); now it works in stripes."""
    data = dicom(2000, 2000, RLELossless)
    assert len(data) < 300_000
    limits = ImageLimits(max_pixels=5_000_000)
    tracemalloc.start()
    try:
        info = inspect_image(data, "application/dicom", limits, budget=DecodeBudget(2**30))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (info.width, info.height) == (2000, 2000)
    assert peak < 45_000_000, peak


def test_striped_rescaling_matches_the_whole_image(monkeypatch: pytest.MonkeyPatch) -> None:
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    whole = inspect_image(data, None, LIMITS).stored_bytes
    monkeypatch.setattr(images, "_STRIPE_PIXELS", 200)  # stripes of one or two rows
    assert inspect_image(data, None, LIMITS).stored_bytes == whole


def test_decode_memory_is_checked_from_the_header_before_decoding() -> None:
    small_budget = DecodeBudget(64 * 2**20)
    limits = ImageLimits(max_pixels=50_000_000)
    # 4000x4000 16-bit: 32 MB of pixels from a ~0.3 MB file; refused before any decoding.
    data = dicom(4000, 4000, RLELossless)
    tracemalloc.start()
    try:
        with pytest.raises(QuarantineError) as info:
            inspect_image(data, "application/dicom", limits, budget=small_budget)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.reason == "image_over_memory_budget"
    assert peak < 5 * len(data) + 10_000_000
    # Frames count: 3 frames are refused from the header too (one image per record).
    assert reason(dicom(64, 64, frames=3), "application/dicom") == "dicom_unsupported"
    # A PNG whose decoded size is above the budget.
    big_png = encode(np.zeros((4000, 6000), dtype=np.uint8), "PNG")
    with pytest.raises(QuarantineError) as info:
        inspect_image(big_png, "image/png", limits, budget=DecodeBudget(32 * 2**20))
    assert info.value.reason == "image_over_memory_budget"


def test_deflated_dicom_bomb_is_refused_before_inflating_it() -> None:
    data = dicom(4000, 4000, DeflatedExplicitVRLittleEndian)  # 32 MB inflated, ~30 kB file
    assert len(data) < 100_000
    with pytest.raises(QuarantineError) as info:
        inspect_image(data, None, ImageLimits(), budget=DecodeBudget(32 * 2**20))
    assert info.value.reason == "image_over_memory_budget"
    small = dicom(64, 64, DeflatedExplicitVRLittleEndian)  # a legitimate deflated DICOM
    assert inspect_image(small, None, LIMITS).format == "dicom"


def test_concurrent_decodes_share_one_budget() -> None:
    budget = DecodeBudget(150 * 2**20)
    data = dicom(1500, 1500, RLELossless)  # ~64 MiB reserved each: at most 2 at a time
    limits = ImageLimits(max_pixels=5_000_000)
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda _: inspect_image(data, None, limits, budget=budget), range(8))
        )
    assert {r.sha256 for r in results} == {hashlib.sha256(data).hexdigest()}
    assert 0 < budget.peak <= budget.total and budget.used == 0


def test_unexpected_decoder_errors_are_quarantined(monkeypatch: pytest.MonkeyPatch) -> None:
    """Failure injection: a decoder's internal error quarantines the record, class only."""
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()

    def broken(*args: object) -> None:
        raise IndexError("Patient/p0001 at offset 12")

    monkeypatch.setattr(images, "_decode_dicom", broken)
    with pytest.raises(QuarantineError) as info:
        inspect_image(data, None, LIMITS)
    assert (info.value.reason, info.value.detail) == ("image_decode_error", "IndexError")


def test_decode_budget_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "_BUDGET", [])
    monkeypatch.setenv("PATIENT_ML_DECODE_MEMORY_BYTES", str(256 * 2**20))
    assert images.decode_budget().total == 256 * 2**20
    monkeypatch.setattr(images, "_BUDGET", [])
    monkeypatch.setenv("PATIENT_ML_DECODE_MEMORY_BYTES", "lots")
    with pytest.raises(PatientMLError, match="PATIENT_ML_DECODE_MEMORY_BYTES"):
        images.decode_budget()
