"""The Examples tab's list at size: 100,000 examples (DocumentReferences with label Observations,
a third unlabelled, a third draft, a third confirmed, 20,000 patients with split assignments);
prints its figures.

    .venv/bin/python benchmarks/labeling_lists.py [--examples 100000] [--repeat 5]

Builds the examples index as the API server does (`services.examples.build_index` over the
records, every label version kept for the history) and then times what one request of the
labelling page costs on it (median of `--repeat` runs, milliseconds): the first page of 48 with
the counts per status, a page deep in the list (keyset marker at 90 %), the unlabelled filter,
a split filter and a patient-key filter, each with its counts, and one example's history. The
index is built once per dataset and process; after PATIENT_ML_EXAMPLES_CACHE_SECONDS (default
10 s) it is rebuilt in the background while requests are answered from it, so no request after
the first pays the build. Last, what a label save costs at this size: the example re-read from an
NDJSON source and put into the index in place, beside a full rebuild from that source.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT))

from benchmarks import smoke  # noqa: E402
from patient_ml.curation.pipeline import DatasetView  # noqa: E402
from patient_ml.services import examples as ex  # noqa: E402

SYSTEM, CODE, LABELS = "urn:bench:type", "bench", "urn:bench:labels"


def records(count: int, patients: int) -> list[tuple[str, None, dict[str, Any]]]:
    out: list[tuple[str, None, dict[str, Any]]] = []
    for n in range(count):
        doc_id = f"img-{n:06d}"
        out.append((f"docs:{n}", None, {
            "resourceType": "DocumentReference", "id": doc_id, "status": "current",
            "meta": {"versionId": "1", "lastUpdated": "2026-01-01T00:00:00Z"},
            "type": {"coding": [{"system": SYSTEM, "code": CODE}]},
            "subject": {"reference": f"Patient/p{n % patients}"},
            "content": [{"attachment": {"url": f"file:///images/{doc_id}.png",
                                        "contentType": "image/png"}}],
        }))  # fmt: skip
        kind = n % 3
        if kind == 0:
            continue  # unlabelled
        out.append((f"obs:{n}", None, observation(
            doc_id, f"lab-{n}", "preliminary" if kind == 1 else "final", n % 2,
            patient=f"p{n % patients}",
        )))  # fmt: skip
    return out


def observation(
    doc_id: str, obs_id: str, status: str, label: int, *, patient: str, version: str = "1"
) -> dict[str, Any]:
    """A label Observation of `doc_id` with the label code the platform writes."""
    from patient_ml.fhir import mapping

    return {
        "resourceType": "Observation", "id": obs_id, "status": status,
        "meta": {"versionId": version, "lastUpdated": "2026-01-02T00:00:00Z"},
        "code": {"coding": [{"system": mapping.LABEL_CODE_SYSTEM, "code": mapping.LABEL_CODE}]},
        "focus": [{"reference": f"DocumentReference/{doc_id}"}],
        "subject": {"reference": f"Patient/{patient}"},
        "performer": [{"display": "Dr. Bench"}],
        "valueCodeableConcept": {"coding": [{"system": LABELS, "code": str(label)}]},
    }  # fmt: skip


def view() -> DatasetView:
    return DatasetView(
        id="bench", name="bench", problem_type="imgClf", labels=((0, "negative"), (1, "positive")),
        label_system=LABELS, filter_codes=(f"{SYSTEM}|{CODE}",),
        split_ratios={"train": 0.6, "validation": 0.2, "test": 0.2}, max_image_bytes=10**7,
        max_image_pixels=10**7, min_image_side=8, salt="bench-salt",
    )  # fmt: skip


def timed(repeat: int, call: Any) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = smoke.parse(parser, examples=2000, repeat=1)
    patients = max(1, args.examples // 5)
    raw = records(args.examples, patients)
    started = time.perf_counter()
    index = ex.build_index(view(), raw)
    build_ms = (time.perf_counter() - started) * 1000
    assert len(index.examples) == args.examples, len(index.examples)
    splits = ("train", "validation", "test")
    started = time.perf_counter()
    for example in index.examples.values():  # the split assignments, as the DB holds them
        key = index.patient_key(example)
        index.split_of_patient.setdefault(key, splits[int(key[:2], 16) % 3])
    index.lookup()  # per status, label, split and patient key
    keys_ms = (time.perf_counter() - started) * 1000

    def page(filters: ex.Filters, marker: str | None = None) -> Any:
        found, _ = ex.select(index, marker=marker, limit=48, filters=filters)
        wire = [ex.example_to_wire(e, "imgClf") | ex.extension_fields(index, e) for e in found]
        return wire, ex.counts(index, filters)

    deep = ex.encode_marker(index.ids[int(len(index.ids) * 0.9)])
    some_key = index.patient_key(index.examples[index.ids[123]])
    cases = [
        ("first page of 48 + counts", lambda: page(ex.Filters())),
        ("page at 90 % (keyset marker) + counts", lambda: page(ex.Filters(), deep)),
        ("unlabelled, first page + counts", lambda: page(ex.Filters(status="unlabeled"))),
        ("split=test, first page + counts", lambda: page(ex.Filters(split="test"))),
        ("one patient key + counts", lambda: page(ex.Filters(patient_key=some_key))),
        ("one example's history", lambda: index.history.get(index.ids[len(index.ids) // 2], [])),
    ]
    print(f"{args.examples:,} examples, {patients:,} patients")
    print(f"index build from {len(raw):,} records: {build_ms:,.0f} ms (+ lookups by status, "
          f"label, split, patient key {keys_ms:,.0f} ms, once per index)")  # fmt: skip
    for name, call in cases:
        ms, result = timed(args.repeat, call)
        extra = f" (counts {result[1]})" if isinstance(result, tuple) else ""
        print(f"{name}: {ms:,.1f} ms{extra}")
    save_at_size(index, raw, args.repeat)


def save_at_size(index: ex.ExampleIndex, raw: list[Any], repeat: int) -> None:
    """What a label save costs the index at this size: the records of one example re-read from
    the NDJSON source (`NdjsonSource.records_of`, a byte search per line) and put into the
    cached index in place, against reading the whole source again (a full rebuild)."""
    import tempfile

    import orjson

    from patient_ml.curation.sources import NdjsonSource

    with tempfile.TemporaryDirectory(prefix="pml-bench-ndjson-") as tmp:
        folder = Path(tmp)
        for kind in ("DocumentReference", "Observation"):
            lines = [orjson.dumps(r[2]) for r in raw if r[2]["resourceType"] == kind]
            (folder / f"{kind}.ndjson").write_bytes(b"\n".join(lines) + b"\n")
        size = sum(f.stat().st_size for f in folder.iterdir()) / 1e6
        source = NdjsonSource(folder)
        started = time.perf_counter()
        ex.build_index(view(), source.records())
        full_ms = (time.perf_counter() - started) * 1000
        target = index.ids[len(index.ids) // 2]

        def refresh() -> None:
            part = ex.build_index(view(), source.records_of(target))
            index.replace_example(target, part)

        ms, _ = timed(repeat, refresh)
    print(
        f"label save at this size, NDJSON source of {size:,.0f} MB: the example re-read and "
        f"put in place {ms:,.1f} ms; a full rebuild from the source {full_ms:,.0f} ms"
    )


if __name__ == "__main__":
    main()
