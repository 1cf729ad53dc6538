"""The reference run-length format: byte-identical to Label Studio's encoder (re-implemented here
from its published algorithm as an independent oracle), lossless, and strict on bad input."""

from __future__ import annotations

import numpy as np
import pytest

from patient_ml.exceptions import InvalidInputError
from patient_ml.labels import masks, rle


def oracle_encode(values: np.ndarray) -> list[int]:
    """Label Studio's `encode_rle`, written out bit string by bit string."""
    arr = np.asarray(values)
    out = f"{len(arr):032b}{7:05b}" + "".join(f"{x - 1:04b}" for x in (3, 4, 8, 16))
    ends = np.append(np.where(arr[1:] != arr[:-1]), len(arr) - 1)
    for length, value in zip(np.diff(np.append(-1, ends)), arr[ends], strict=True):
        word = f"{int(value):08b}"
        if length == 1:
            out += "0" + "00" + "000" + word
        elif length <= 8:
            out += "1" + "00" + f"{length - 1:03b}" + word
        elif length <= 16:
            out += "1" + "01" + f"{length - 1:04b}" + word
        elif length <= 256:
            out += "1" + "10" + f"{length - 1:08b}" + word
        else:
            rest = int(length)
            while rest > 2**16:
                out += "1" + "11" + f"{2**16 - 1:016b}" + word
                rest -= 2**16
            out += "1" + "11" + f"{rest - 1:016b}" + word
    out += "0" * (8 - len(out) % 8)
    return [int(out[i : i + 8], 2) for i in range(0, len(out), 8)]


def rgba(mask: np.ndarray) -> np.ndarray:
    return np.repeat((mask.astype(np.uint8) * 255)[:, :, None], 4, axis=2).ravel()


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (64, 64), (300, 400)])
def test_encode_matches_label_studio_and_round_trips(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    mask = np.zeros(shape, dtype=bool)
    mask[rng.integers(0, shape[0], 40), rng.integers(0, shape[1], 40)] = True
    mask[shape[0] // 3 : shape[0] // 2, :] = True
    values = rgba(mask)
    encoded = rle.encode(values)
    assert encoded == oracle_encode(values)
    assert np.array_equal(rle.decode(encoded, expected_size=values.size), values)


def test_runs_longer_than_65536_and_literal_blocks() -> None:
    values = np.zeros(200_000, dtype=np.uint8)
    values[70_000:140_001] = 255
    assert rle.encode(values) == oracle_encode(values)
    assert np.array_equal(rle.decode(rle.encode(values), expected_size=values.size), values)
    # A literal block of 3 words (flag 0, count field 3 bits = 2): 7, 8, 9.
    bits = f"{3:032b}{7:05b}" + "".join(f"{x - 1:04b}" for x in (3, 4, 8, 16))
    bits += "0" + "00" + "010" + "".join(f"{v:08b}" for v in (7, 8, 9))
    bits += "0" * (8 - len(bits) % 8)
    stream = [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]
    assert rle.decode(stream, expected_size=3).tolist() == [7, 8, 9]


@pytest.mark.parametrize(
    ("stream", "size", "problem"),
    [
        (lambda e: e[:-3], 400, "ends too early"),
        (lambda e: e, 399, "holds 400 values"),
        (lambda e: [*e[:-1], 300], 400, "byte"),
    ],
)
def test_decode_refuses_bad_streams(stream: object, size: int, problem: str) -> None:
    encoded = rle.encode(rgba(np.eye(10, dtype=bool)))
    with pytest.raises(InvalidInputError) as err:
        rle.decode(stream(encoded), expected_size=size, field="areas[0].rle")  # type: ignore[operator]
    assert problem in err.value.message and err.value.errors[0].field == "areas[0].rle"


def test_masks_between_rle_areas_and_png() -> None:
    one, two = np.zeros((6, 8), bool), np.zeros((6, 8), bool)
    one[1:3, 1:4], two[4:, 5:] = True, True
    areas = [{"id": "a", "rle": rle.encode(rgba(one))}, {"id": "b", "rle": rle.encode(rgba(two))}]
    png = masks.areas_to_png(areas, height=6, width=8, index_of_label={"a": 1, "b": 2})
    pixels = masks.read_png(png)
    assert pixels[1, 1] == 1 and pixels[5, 7] == 2 and pixels[0, 0] == 0
    back = masks.png_to_areas(png, label_of_index={1: "a", 2: "b"})
    assert back["height"] == 6 and back["width"] == 8 and back["areas"] == areas
    with pytest.raises(InvalidInputError, match="overlaps an earlier area on 6 pixels"):
        overlap = one.copy()
        overlap[1:3, 1:4] = True
        masks.areas_to_png(
            [areas[0], {"id": "b", "rle": rle.encode(rgba(overlap))}],
            height=6, width=8, index_of_label={"a": 1, "b": 2},
        )  # fmt: skip
    with pytest.raises(InvalidInputError, match="is not a label of this dataset"):
        masks.areas_to_png([{"id": "zz", "rle": areas[0]["rle"]}], height=6, width=8,
                           index_of_label={"a": 1})  # fmt: skip
