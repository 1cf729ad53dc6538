"""Memory per record is bounded by the limits, not by the records (issue 33): a line longer than
the record limit is skipped while it is read, never held (a 1 MB `.ndjson.gz` may inflate to
gigabytes on one line), and inline images are streamed to scratch files while records are read
and released once stored, so memory does not grow with the number of inline records."""

from __future__ import annotations

import base64
import gzip
import io
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from PIL import Image
from sqlalchemy import Engine

from patient_ml.curation.fetch import FetchPolicy, ImageFetcher
from patient_ml.db.engine import session_scope
from patient_ml.fhir.ndjson import LineTooLong, iter_ndjson_file, max_line_bytes_for
from patient_ml.fhir.transport import split_lines
from patient_ml.services.datasets import create_dataset
from patient_ml.storage import LocalArtifactStore
from tests.curation.cohort import Cohort, dataset_config, png
from tests.curation.test_hostile_records import manifest, reasons, run

MiB = 1 << 20


def peak_bytes(work: Callable[[], Any]) -> tuple[Any, int]:
    """`work()`'s result and the most memory Python objects (bytes, str, numpy) held during it,
    above what was held before."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = work()
        return result, tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def write_huge_line_gz(path: Path, before: list[bytes], inflated: int, after: list[bytes]) -> None:
    """A .ndjson.gz whose middle line inflates to `inflated` bytes (written in 1 MiB pieces)."""
    with gzip.open(path, "wb", compresslevel=9) as out:
        for line in before:
            out.write(line + b"\n")
        out.write(b'{"resourceType":"DocumentReference","id":"huge","note":"')
        piece = b"A" * MiB
        for _ in range(inflated // MiB):
            out.write(piece)
        out.write(b'"}\n')
        for line in after:
            out.write(line + b"\n")


def test_a_line_above_the_limit_is_skipped_without_being_held(tmp_path: Path) -> None:
    path = tmp_path / "DocumentReference.ndjson.gz"
    first, last = b'{"resourceType":"DocumentReference","id":"a"}', b'{"id":"z"}'
    write_huge_line_gz(path, [first], 256 * MiB, [last])
    assert path.stat().st_size < 1_000_000  # 256 MiB on one line, in well under 1 MB

    lines, peak = peak_bytes(lambda: list(iter_ndjson_file(path, max_line_bytes=MiB)))

    assert [(n, raw) for _, n, raw in lines if not isinstance(raw, LineTooLong)] == [
        (1, first),
        (3, last),
    ]
    too_long = lines[1][2]
    assert isinstance(too_long, LineTooLong) and too_long.limit == MiB
    assert too_long.size > 256 * MiB  # counted while skipped
    assert peak < 8 * MiB


def test_a_line_exactly_at_the_limit_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "x.ndjson"
    line = b'{"id":"' + b"x" * 100 + b'"}'
    path.write_bytes(line + b"\r\n" + line)
    assert [raw for _, _, raw in iter_ndjson_file(path, max_line_bytes=len(line))] == [line, line]
    assert isinstance(next(iter_ndjson_file(path, max_line_bytes=len(line) - 1))[2], LineTooLong)


def test_an_exported_line_above_the_limit_is_skipped_in_linear_time() -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"id":"a"}\n{"id":"big","x":"'
        for _ in range(128):
            yield b"B" * MiB
        yield b'"}\r\n{"id":"c"}'

    lines, peak = peak_bytes(lambda: list(split_lines(chunks(), max_line_bytes=MiB)))

    assert lines[0] == b'{"id":"a"}' and lines[2] == b'{"id":"c"}'
    assert isinstance(lines[1], LineTooLong) and len(lines) == 3
    assert peak < 8 * MiB


def test_the_record_limit_follows_the_image_limit() -> None:
    # base64 with MIME line breaks (escaped in JSON) of the largest image, plus 1 MiB
    assert max_line_bytes_for(50_000_000) > 50_000_000 * 4 // 3 + 2 * 50_000_000 // 57
    assert max_line_bytes_for(50_000_000) < 72_000_000
    assert max_line_bytes_for(20_000) == max_line_bytes_for(20_000)  # a pure function


# ----------------------------------------------------------------------------- curation


def setup_with(engine: Engine, tmp_path: Path, **curation: Any) -> dict[str, Any]:
    name, code = f"ds-{uuid.uuid4().hex[:8]}", f"code-{uuid.uuid4().hex[:8]}"
    with session_scope(engine) as session:
        config = dataset_config(name, code, **curation)
        dataset_id = create_dataset(session, config, actor="t").id
    cohort = Cohort(tmp_path / "source", code, f"urn:test:{name}")
    limit = curation.get("maxImageBytes", 20_000)
    fetcher = ImageFetcher(FetchPolicy(allowed_file_roots=(cohort.images,), max_bytes=limit))
    store = LocalArtifactStore(tmp_path / "artifacts")
    return {"id": dataset_id, "cohort": cohort, "fetcher": fetcher, "tmp": tmp_path, "store": store}


def test_an_oversized_record_is_quarantined_and_never_held(engine: Engine, tmp_path: Path) -> None:
    setup = setup_with(engine, tmp_path)
    cohort: Cohort = setup["cohort"]
    cohort.add_patients(0, 4)
    folder = tmp_path / "batch"
    folder.mkdir()
    docs = [orjson.dumps(d) for d in cohort.docs]
    write_huge_line_gz(folder / "DocumentReference.ndjson.gz", docs[:3], 192 * MiB, docs[3:])
    obs = b"\n".join(orjson.dumps(o) for o in cohort.observations)
    (folder / "Observation.ndjson").write_bytes(obs + b"\n")

    result, peak = peak_bytes(lambda: run(engine, setup, folder, workers=2))

    assert reasons(result) == {"record_too_large": 1}
    item = result.report["quarantined"]["items"][0]
    assert item["source"] == "DocumentReference.ndjson.gz:4"
    assert "longer than" in item["detail"] and "maxImageBytes" in item["detail"]
    assert set(manifest(setup, result)) == cohort.good_ids
    assert peak < 48 * MiB, peak / MiB


def noise_png(seed: int, side: int = 700) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (side, side), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(out, format="PNG", compress_level=1)
    return out.getvalue()


def test_inline_images_take_memory_independent_of_their_number(
    engine: Engine, tmp_path: Path
) -> None:
    """16 inline images hold no more memory than 4: each is streamed to a scratch file while
    its record is read and released once stored (before, every record's base64 text stayed in
    memory until the images were fetched)."""
    peaks = {}
    size = 0
    for count in (4, 16):
        work = tmp_path / f"n{count}"
        setup = setup_with(
            engine, work, maxImageBytes=2_000_000, maxImagePixels=1_000_000, minImageSide=8
        )
        cohort: Cohort = setup["cohort"]
        for n in range(count):
            data = noise_png(count * 100 + n)
            size = max(size, len(data))
            doc = cohort.doc(f"inline-{n}", f"p{n}", url=None)
            text = base64.b64encode(data).decode()
            doc["content"][0]["attachment"]["data"] = "\n".join(
                text[i : i + 76] for i in range(0, len(text), 76)
            )
            cohort.label(f"o{n}", f"inline-{n}", n % 2)
        folder = cohort.write_ndjson(work / "batch")
        result, peaks[count] = peak_bytes(lambda s=setup, f=folder: run(engine, s, f, workers=1))
        assert reasons(result) == {}
        assert len(manifest(setup, result)) == count
    assert size > 400_000
    assert peaks[16] - peaks[4] < 2 * size, {k: v / MiB for k, v in peaks.items()}


def test_scratch_files_of_inline_images_are_removed(engine: Engine, tmp_path: Path) -> None:
    setup = setup_with(engine, tmp_path)
    cohort: Cohort = setup["cohort"]
    for n in range(3):
        doc = cohort.doc(f"inline-{n}", f"p{n}", url=None)
        doc["content"][0]["attachment"]["data"] = base64.b64encode(png(n)).decode()
    run(engine, setup, cohort.write_ndjson(tmp_path / "batch"))
    work = [p for p in tmp_path.glob("work-*/**/*") if p.is_file()]
    assert work == []  # the staging file and the inline images' scratch files are gone
