"""Inline images (`attachment.data`, FHIR base64Binary): decoded as a stream, kept on disk.

* **Whitespace** (issue 33): FHIR's base64Binary allows whitespace between the characters, as
  MIME line breaks put there (CRLF every 76 characters); spaces, tabs, CR and LF are skipped,
  anything else outside the base64 alphabet, padding in the middle or data after the padding is
  `invalid_inline_data`.
* **Memory** (issue 33): a record's inline image is decoded a MiB at a time into a scratch file
  of the curation's private folder while the record is read (`spill`), and the record's
  attachment becomes a `SpilledData` that the fetcher reads back when the image's turn comes;
  the file is removed once the image is stored. So the records read before an image is fetched
  hold no image data, and memory does not grow with the number of inline records.
* `canonical_sha` hashes a record's canonical JSON without a second copy of its inline data.
"""

from __future__ import annotations

import binascii
import hashlib
import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from patient_ml.curation.quarantine import QuarantineError

CHUNK = 1 << 20  # characters decoded at a time
LARGE = 1 << 16  # inline data longer than this (characters) is streamed, never copied whole
_WHITESPACE = b" \t\r\n"


class SpilledData(dict[str, Any]):
    """An attachment whose inline data was decoded into `path` (`size` bytes) while its record
    was read. Only curation makes one (JSON never gives a dict subclass), so a record cannot
    name a file to read."""

    path: Path
    size: int

    @classmethod
    def of(cls, attachment: dict[str, Any], path: Path, size: int) -> SpilledData:
        spilled = cls({k: v for k, v in attachment.items() if k != "data"})
        spilled.path, spilled.size = path, size
        return spilled

    def read(self, max_bytes: int) -> bytes:
        if self.size > max_bytes:
            raise QuarantineError("image_too_large", f"inline data > {max_bytes} B")
        return self.path.read_bytes()

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


def decoded_chunks(text: object, max_bytes: int) -> Iterator[bytes]:
    """The bytes of base64 `text`, a piece at a time; QuarantineError when it is not base64
    (whitespace allowed) or decodes to more than `max_bytes`."""
    if not isinstance(text, str):
        raise QuarantineError("invalid_inline_data", "not a string")
    if len(text) > 2 * (4 * math.ceil(max_bytes / 3)) + CHUNK:  # even with much whitespace
        raise QuarantineError("image_too_large", f"inline data > {max_bytes} B")
    carry, total, finished = b"", 0, False
    for start in range(0, len(text), CHUNK):
        try:
            piece = text[start : start + CHUNK].encode("ascii")
        except UnicodeEncodeError:
            raise QuarantineError("invalid_inline_data", "a non-ASCII character") from None
        piece = carry + piece.translate(None, _WHITESPACE)
        if not piece:
            continue
        if finished:
            raise QuarantineError("invalid_inline_data", "data after the padding")
        usable = len(piece) - len(piece) % 4
        block, carry = piece[:usable], piece[usable:]
        finished = block.endswith(b"=")
        try:
            data = binascii.a2b_base64(block, strict_mode=True)
        except binascii.Error:
            raise QuarantineError("invalid_inline_data") from None
        total += len(data)
        if total > max_bytes:
            raise QuarantineError("image_too_large", f"inline data > {max_bytes} B")
        yield data
    if carry:
        raise QuarantineError("invalid_inline_data", "the length is not a multiple of 4")


def decode(text: object, max_bytes: int) -> bytes:
    """The bytes of base64 `text` (see `decoded_chunks`)."""
    return b"".join(decoded_chunks(text, max_bytes))


def spill(text: object, path: Path, max_bytes: int) -> int:
    """Decode base64 `text` into the file `path`; returns its size. Nothing is left behind
    when the text is refused."""
    try:
        with open(path, "wb") as out:
            size = 0
            for data in decoded_chunks(text, max_bytes):
                out.write(data)
                size += len(data)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if size == 0:
        path.unlink(missing_ok=True)
        raise QuarantineError("invalid_inline_data", "empty")
    return size


def _large_attachments(resource: dict[str, Any]) -> list[dict[str, Any]]:
    content = resource.get("content")
    found = []
    for item in content if isinstance(content, list) else ():
        attachment = item.get("attachment") if isinstance(item, dict) else None
        if isinstance(attachment, dict):
            data = attachment.get("data")
            if isinstance(data, str) and len(data) > LARGE:
                found.append(attachment)
    return found


def canonical_sha(resource: dict[str, Any]) -> str:
    """sha256 of `orjson.dumps(resource, OPT_SORT_KEYS)`, computed without a second copy of
    large inline data (each is swapped for a token, and hashed in pieces in its place)."""
    large = _large_attachments(resource)
    if not large:
        return hashlib.sha256(orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)).hexdigest()
    token = f"\x00patient-ml-{uuid.uuid4().hex}-"
    swapped = []
    for i, attachment in enumerate(large):
        swapped.append((attachment, attachment["data"]))
        attachment["data"] = f"{token}{i}"
    try:
        text = orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)
    finally:
        for attachment, data in swapped:
            attachment["data"] = data
    digest = hashlib.sha256()
    for i, (_, data) in enumerate(swapped):
        before, _, text = text.partition(orjson.dumps(f"{token}{i}"))
        digest.update(before + b'"')
        for start in range(0, len(data), CHUNK):
            digest.update(orjson.dumps(data[start : start + CHUNK])[1:-1])
        digest.update(b'"')
    digest.update(text)
    return digest.hexdigest()


def without_large_data(resource: dict[str, Any]) -> dict[str, Any]:
    """`resource` with large inline data replaced by a short valid base64 text (copies along
    the way, the original untouched): what a validator needs to see, without copying images."""
    if not _large_attachments(resource):
        return resource
    content = []
    for item in resource["content"]:
        attachment = item.get("attachment") if isinstance(item, dict) else None
        if isinstance(attachment, dict) and isinstance(attachment.get("data"), str):
            item = {**item, "attachment": {**attachment, "data": "AAAA"}}
        content.append(item)
    return {**resource, "content": content}
