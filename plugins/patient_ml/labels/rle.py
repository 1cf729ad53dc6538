"""The reference API's run-length encoding of a segmentation mask (Label Studio's brush format).

An area's `rle` is a list of bytes holding a bit stream over the flattened RGBA image
(height x width x 4 values, 0..255):

    32 bits   number of values
     5 bits   word size - 1              (8-bit words: 7)
    4x4 bits  run-length field sizes - 1 (3, 4, 8 and 16 bits: 2, 3, 7, 15)
    then, until every value is decoded, blocks of:
     1 bit    1 = a run of one repeated word, 0 = literal words
     2 bits   which field size holds the count
     n bits   count - 1
     words    the repeated word (run) or `count` words (literals)
    zero bits up to a whole byte (an encoder always adds 1..8 of them)

A pixel belongs to the area when its alpha (4th) value is non-zero; encoders write 255 in all
four channels. `encode` emits the same bytes as Label Studio's converter for the same values.
"""

from __future__ import annotations

import numpy as np

from patient_ml.exceptions import FieldError, InvalidInputError

WORD_BITS = 8
FIELD_SIZES = (3, 4, 8, 16)
MAX_RUN = 2**16


def encode(values: np.ndarray) -> list[int]:
    """The RLE bytes of a flat uint8 array."""
    flat = np.asarray(values, dtype=np.uint8).ravel()
    bits = [f"{flat.size:032b}", f"{WORD_BITS - 1:05b}"]
    bits += [f"{size - 1:04b}" for size in FIELD_SIZES]
    if flat.size:
        change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        starts = np.concatenate(([0], change))
        lengths = np.diff(np.concatenate((starts, [flat.size])))
        for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
            word = f"{int(flat[start]):08b}"
            if length == 1:
                bits.append("000000" + word)
                continue
            while length > MAX_RUN:
                bits.append(f"111{MAX_RUN - 1:016b}{word}")
                length -= MAX_RUN
            bits.append(_run(length, word))
    stream = "".join(bits)
    stream += "0" * (8 - len(stream) % 8)
    return list(int(stream, 2).to_bytes(len(stream) // 8, "big"))


def _run(length: int, word: str) -> str:
    if length <= 8:
        return f"100{length - 1:03b}{word}"
    if length <= 16:
        return f"101{length - 1:04b}{word}"
    if length <= 256:
        return f"110{length - 1:08b}{word}"
    return f"111{length - 1:016b}{word}"


def decode(rle: list[int], *, expected_size: int, field: str = "rle") -> np.ndarray:
    """The flat uint8 array of an RLE; 422 naming `field` when it is not exactly
    `expected_size` values in the format above."""

    def refuse(problem: str) -> InvalidInputError:
        return InvalidInputError(
            f"{field} is not a valid run-length encoded mask: {problem}.",
            [FieldError(field, problem, f"{len(rle)} bytes")],
            fix="encode the RGBA mask (height x width x 4 values) in Label Studio's brush "
            "RLE format",
        )

    if any(not 0 <= b <= 255 for b in rle):
        raise refuse("every item must be a byte (0..255)")
    stream = np.unpackbits(np.asarray(rle, dtype=np.uint8)).tobytes().translate(_AS_TEXT)
    text = stream.decode("ascii")
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        if pos + n > len(text):
            raise refuse("the bit stream ends too early")
        value = int(text[pos : pos + n], 2)
        pos += n
        return value

    count = read(32)
    if count != expected_size:
        raise refuse(f"it holds {count} values where height x width x 4 = {expected_size}")
    word = read(5) + 1
    if word != WORD_BITS:
        raise refuse(f"word size {word} bits; only 8-bit words are supported")
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(count, dtype=np.uint8)
    i = 0
    while i < count:
        repeated = read(1)
        n = read(sizes[read(2)]) + 1
        if i + n > count:
            raise refuse("a run goes past the end of the mask")
        if repeated:
            out[i : i + n] = read(WORD_BITS)
        else:
            for k in range(n):
                out[i + k] = read(WORD_BITS)
        i += n
    return out


_AS_TEXT = bytes.maketrans(b"\x00\x01", b"01")
