"""Hostile records and regexes of `benchmarks/curation.py --hostile` (issue 33): their inputs,
and the figures printed for them.

* a `.ndjson.gz` of about 1 MB holding one line that inflates to `--huge-line-mib` MiB;
* `--inline-records` DocumentReferences whose inline image (`attachment.data`, base64 with
  MIME line breaks) is a ~48 MB PNG each, curated with 1 worker at half and at the full count,
  and with `--workers`;
* catastrophic metric regexes on short and maximum-length lines, as the training-log parser
  runs them.
"""

from __future__ import annotations

import base64
import gzip
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from PIL import Image

MiB = 1 << 20


def doc(i: int, attachment: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "id": f"h{i}",
        "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": "bench"}]},
        "subject": {"reference": f"Patient/p{i}"},
        "content": [{"attachment": {"contentType": "image/png", **attachment}}],
    }


def small_png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (32, 32), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(out, format="PNG")
    return out.getvalue()


def huge_line_source(folder: Path, mib: int) -> str:
    """A folder with one DocumentReference.ndjson.gz: 3 good records, one line inflating to
    `mib` MiB (a DocumentReference whose inline data is 'A' repeated), 3 good records."""
    folder.mkdir(parents=True)
    good = [doc(i, {"data": base64.b64encode(small_png(i)).decode()}) for i in range(6)]
    path = folder / "DocumentReference.ndjson.gz"
    with gzip.open(path, "wb", compresslevel=9) as out:
        for record in good[:3]:
            out.write(orjson.dumps(record) + b"\n")
        head, tail = orjson.dumps(doc(99, {"data": "@"})).split(b"@")
        out.write(head)
        piece = b"A" * MiB
        for _ in range(mib):
            out.write(piece)
        out.write(tail + b"\n")
        for record in good[3:]:
            out.write(orjson.dumps(record) + b"\n")
    return f"1 line of {mib} MiB (+6 small records) in a {path.stat().st_size / 1e6:.2f} MB .gz"


def inline_source(folder: Path, count: int, side: int, mime: bool) -> tuple[str, int]:
    """A folder with `count` DocumentReferences, each with a distinct side x side RGB noise PNG
    (stored, not compressed: ~3 bytes a pixel) inline; returns a description and PNG size."""
    folder.mkdir(parents=True)
    size = 0
    with open(folder / "DocumentReference.ndjson", "wb") as out:
        for i in range(count):
            pixels = np.random.default_rng(1000 + i).integers(0, 255, (side, side, 3), np.uint8)
            png = io.BytesIO()
            Image.fromarray(pixels, mode="RGB").save(png, format="PNG", compress_level=0)
            data = png.getvalue()
            size = len(data)
            text = base64.b64encode(data)
            del data, pixels
            if mime:  # MIME line breaks: CRLF every 76 characters
                text = b"\r\n".join(text[j : j + 76] for j in range(0, len(text), 76))
            head, tail = orjson.dumps(doc(i, {"data": "@"})).split(b"@")
            out.write(head + orjson.dumps(text.decode())[1:-1] + tail + b"\n")
    what = "MIME base64 (CRLF every 76)" if mime else "base64"
    return f"{count} records with a {size / 1e6:.1f} MB PNG inline as {what}", size


def regex_figures() -> list[str]:
    """Time of catastrophic metric regexes as the platform runs them, and as Python's `re`
    would (on shorter lines: it doubles per character)."""
    import re

    from patient_ml.training.metrics import MetricParser

    lines = []
    patterns = [r"^(?:a+)+b=([0-9]+)", r"val_loss=((?:1+)+)y"]
    try:
        parser = MetricParser.from_config(
            [{"name": f"m{i}", "regex": p} for i, p in enumerate(patterns)]
        )
    except Exception as exc:
        return [f"metric parser refused the patterns: {exc}"]
    engine = type(parser.definitions[0][1]).__module__.split(".")[0]
    hostile = "a" * 29 + "!"
    started = time.perf_counter()
    for _ in range(1 if engine == "re" else 1000):
        parser.feed(hostile)
    runs = 1 if engine == "re" else 1000
    per_line = (time.perf_counter() - started) / runs
    lines.append(
        f"metric regexes ({engine}): {len(patterns)} catastrophic patterns on a 29-character "
        f"line: {per_line * 1e3:.3f} ms per line"
    )
    if engine == "re":  # a backtracking engine would not finish
        return [*lines, "metric regexes (re): 50 patterns on a 10,000-character line: skipped"]
    fifty = MetricParser.from_config(
        [{"name": f"m{i}", "regex": rf"(?:x|a+)+m{i}=([0-9]+)"} for i in range(50)]
    )
    long_line = "a" * 10_000
    started = time.perf_counter()
    for _ in range(20):
        fifty.feed(long_line)
    per_line = (time.perf_counter() - started) / 20
    lines.append(
        f"metric regexes ({engine}): 50 nested-quantifier patterns on a 10,000-character line: "
        f"{per_line * 1e3:.2f} ms per line"
    )
    compiled = re.compile(patterns[0])
    timings = []
    for n in (20, 22, 24):
        started = time.perf_counter()
        compiled.search("a" * n + "!")
        timings.append(f"{n} chars {time.perf_counter() - started:.2f} s")
    lines.append(f"the first pattern in Python's re: {', '.join(timings)} (x2 per character)")
    return lines
