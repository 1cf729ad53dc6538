"""Monitoring on real images: a Br35H champion served by a real endpoint, watched by the
product's monitor check; prints false-alarm rate, detection delay and the log's overhead.

    .venv/bin/python benchmarks/monitoring.py [--limit 1000] [--window 50] [--trials 2]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

In a fresh temporary home (product DB: SQLite there, or a temporary database on the PostgreSQL
server `--postgres` names, dropped afterwards): the Br35H sample (`--limit` class-balanced
images) as FHIR NDJSON, curated, tuned with the reference trainer (local backend), evaluated,
approved and deployed to a cloud endpoint (local process), which stores the champion's reference
profile. Then, through `services.predictions.predict` (what REST and CLI call, so every request
is logged):

- unshifted: Br35H images the model never saw (not in the sample), in the sample's site mix
  (every third image from the degraded synthetic site, as a third of the sample's patients),
  in disjoint windows of `--window` requests, one monitor check per window: false-alarm
  rate = windows with a breach;
- shifted, each after a window of unshifted traffic: contrast halved, brightness +40,
  nuclei microscopy tiles sent to the brain model, blur, 4x lower resolution, noise, JPEG
  recompression and a prevalence change (tumour images only); a check every `--step`
  requests on the sliding window: detection delay = shifted requests until the first breach;
- one site's images change (a third of the traffic: noise, blur, recompression), each after
  a clean window, checked on the newest 3 x `--window` requests with the whole window only,
  then with a window per site (`monitoring.subgroups: [site]`): detection delay of each;
- the prediction log's cost per request: image statistics + the row insert (the code the
  predictions service runs after the endpoint answered), against the whole request.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import smoke  # noqa: E402


def contrast_halved(data: bytes) -> bytes:
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32)
    return _png(pixels.mean() + (pixels - pixels.mean()) * 0.5)


def brighter(data: bytes) -> bytes:
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32)
    return _png(pixels + 40)


def blurred(data: bytes) -> bytes:
    from PIL import ImageFilter

    image = Image.open(io.BytesIO(data)).convert("L").filter(ImageFilter.GaussianBlur(2))
    return _png(np.asarray(image, dtype=np.float32))


def lower_resolution(data: bytes) -> bytes:
    image = Image.open(io.BytesIO(data)).convert("L")
    small = image.resize((max(1, image.width // 4), max(1, image.height // 4)), Image.BILINEAR)
    return _png(np.asarray(small.resize(image.size, Image.BILINEAR), dtype=np.float32))


def noisy(data: bytes, rng: np.random.Generator) -> bytes:
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32)
    return _png(pixels + rng.normal(0, 12, pixels.shape))


def recompressed(data: bytes) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("L").save(out, format="JPEG", quality=30)
    return out.getvalue()


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L").save(out, format="PNG")
    return out.getvalue()


def nuclei_tiles() -> list[bytes]:
    from include.sample_data import nuclei

    image_path, mask_path, _ = nuclei.source_files()
    image = nuclei.to_uint8(nuclei.read_tiff(image_path))
    mask = nuclei.read_tiff(mask_path)
    return [nuclei.png(tile) for _, _, tile, _ in nuclei.tiles(image, mask, 64)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=1000, help="Br35H images to train on")
    parser.add_argument("--window", type=int, default=50, help="requests per monitor window")
    parser.add_argument("--step", type=int, default=5, help="shifted requests between checks")
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument(
        "--site-windows", type=int, default=10, help="clean windows checked per site"
    )
    parser.add_argument("--postgres", help="admin URL of a PostgreSQL server for the product DB")
    args = smoke.parse(parser, limit=200, window=10, trials=1, site_windows=2)
    home = Path(tempfile.mkdtemp(prefix="pml-monitor-bench-"))
    os.environ["PATIENT_ML_HOME"] = str(home)
    os.environ.pop("PATIENT_ML_DATABASE_URL", None)
    os.environ["PATIENT_ML_ARTIFACT_URI"] = (home / "artifacts").as_uri()
    database = f"pml_monitor_bench_{os.getpid()}"
    if args.postgres:
        _admin(args.postgres, f'CREATE DATABASE "{database}"')
        os.environ["PATIENT_ML_DATABASE_URL"] = f"{args.postgres.rsplit('/', 1)[0]}/{database}"
    try:
        return run(args, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
        if args.postgres:
            from patient_ml.db.engine import get_engine

            get_engine().dispose()
            _admin(args.postgres, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _admin(url: str, statement: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(statement))
    engine.dispose()


def run(args: argparse.Namespace, home: Path) -> int:
    from include.sample_data import br35h
    from include.sample_data import fhir_records as fr
    from include.sample_data.__main__ import main as sample_main
    from include.sample_data.output import site_effect
    from patient_ml import settings
    from patient_ml.curation.fetch import FetchPolicy, ImageFetcher
    from patient_ml.curation.sources import NdjsonSource
    from patient_ml.db import schema
    from patient_ml.db.engine import get_engine, session_scope
    from patient_ml.db.models import Model, ReferenceProfile
    from patient_ml.deploy import deploy_run, stop_old_endpoints
    from patient_ml.monitoring.image_stats import image_statistics
    from patient_ml.services import monitoring, prediction_log
    from patient_ml.services.approvals import decide
    from patient_ml.services.curation import curate
    from patient_ml.services.datasets import create_dataset
    from patient_ml.services.evaluation_run import evaluate_run
    from patient_ml.services.models import create_model
    from patient_ml.services.predictions import predict
    from patient_ml.services.runs import create_run
    from patient_ml.services.tuning import TuningWorker, finish_tuning
    from patient_ml.serving.servers import make_server
    from patient_ml.storage import artifact_store_from_uri
    from patient_ml.training.backends.local import LocalBackend

    sample = home / "br35h"
    with open(os.devnull, "w") as quiet:
        stdout, sys.stdout = sys.stdout, quiet
        try:
            sample_main(["build", "br35h", "--out", str(sample), "--limit", str(args.limit)])
        finally:
            sys.stdout = stdout
    schema.upgrade(get_engine(check_schema=False))
    engine = get_engine()
    store = artifact_store_from_uri(settings.artifact_uri())
    dataset = yaml.safe_load((ROOT / "include/configs/brain_mri_dataset.yaml").read_text())
    dataset["source"] = {"type": "ndjson", "uri": str(sample)}
    model = yaml.safe_load((ROOT / "include/configs/brain_mri_model.yaml").read_text())
    model["trainingApproach"].update(maxTrials=args.trials, parallelTrials=1)
    model["monitoring"] = {"windowSize": args.window, "minSamples": args.window}
    with session_scope(engine) as session:
        create_dataset(session, dataset, actor="bench")
        model_id = create_model(session, model, actor="bench").id
        run_id = create_run(session, model_id, actor="bench").id
    started = time.perf_counter()
    curate(engine=engine, dataset_ref=dataset["name"], source=NdjsonSource(sample), store=store,
           fetcher=ImageFetcher(FetchPolicy(allowed_file_roots=(sample,))),
           workdir=home / "curate", run_id=run_id)  # fmt: skip
    TuningWorker(engine=engine, store=store, backend=LocalBackend(), run_id=run_id, worker="0",
                 workdir=home / "tune", max_trials=args.trials).run()  # fmt: skip
    finish_tuning(engine, store, run_id, actor="bench")
    server = make_server("local")
    summary = evaluate_run(engine, store, server, run_id, home / "eval", actor="bench")
    # the example model names its approvers; one of them decides (anyone when the list is empty)
    approver = next(iter(model.get("approvalPolicy", {}).get("approvers") or []), "dr.bench")
    with session_scope(engine) as session:
        decide(
            session,
            run_id,
            "approved",
            user=approver,
            reason="monitoring benchmark",
            channel="cli",
        )
    deployed_at = time.perf_counter()
    deploy_run(engine, store, run_id, actor="bench", server=server)
    deploy_seconds = time.perf_counter() - deployed_at
    with session_scope(engine) as session:
        reference = session.get(ReferenceProfile, run_id)
        assert reference is not None, "deploy stored no reference profile"
        ref_examples, metrics = reference.examples, reference.profile["metrics"]
        ref_clusters = reference.profile.get("clusters")
    db = "PostgreSQL" if args.postgres else "SQLite"
    print(f"champion: {args.limit} Br35H images ({summary['testExamples']} confirmed test), "
          f"{args.trials} trial(s), curated, trained, evaluated and deployed in "
          f"{time.perf_counter() - started:.0f} s; test balanced accuracy "
          f"{metrics['balancedAccuracy']:.3f}; product DB {db}")  # fmt: skip
    print(f"reference profile: the outputs of {ref_examples} test images, the images of "
          f"{ref_clusters} independent clusters of the snapshot (deploy incl. profile "
          f"{deploy_seconds:.1f} s)")  # fmt: skip

    used = {image.source.name for image in br35h.sample(args.limit)[1]}
    held_out = [(i.path, i.class_index) for i in br35h.list_images() if i.path.name not in used]
    rng = np.random.default_rng(0)
    rng.shuffle(held_out)  # type: ignore[arg-type]
    truth: list[int] = []  # the true label of each image sent, in order

    sites = [name for _, name in fr.SITES]  # patient n's site: SITES[n % 3]
    current = {"site": sites[0]}  # the site of the image `unseen` yielded last

    def labelled() -> Iterator[bytes]:
        """Held-out images in the population the champion was trained and tested on: the
        sample gives a third of its (synthetic) patients a degraded site (lower contrast, a
        blur: `site_effect`), so every third image here gets the same, and each image is sent
        with its site (`SITES[count % 3]`, the first the degraded one). Once every held-out
        image was sent, they are sent again (in the same order)."""
        for count, (path, label) in enumerate(itertools.cycle(held_out)):
            truth.append(label)
            data = path.read_bytes()
            current["site"] = sites[count % 3]
            yield site_effect(data) if count % 3 == 0 else data

    unseen: Iterator[bytes] = labelled()
    latencies: list[float] = []
    answers: list[int] = []  # the label the champion answered, in order

    def send(data: bytes) -> None:
        t = time.perf_counter()
        answer = predict(engine, store, model_id, image=data,
                         attributes={"site": current["site"]})  # fmt: skip
        latencies.append((time.perf_counter() - t) * 1000)
        top = max(answer.get("predictions") or [{}], key=lambda p: p.get("confidence", 0))
        answers.append(int(top.get("index", -1)))

    def measured(last: int) -> float:
        """Balanced accuracy of the last `last` answers (the images' true labels)."""
        y, a = np.asarray(truth[-last:]), np.asarray(answers[-last:])
        return float(np.mean([np.mean(a[y == k] == k) for k in (0, 1) if np.any(y == k)]))

    def of_class(label: int) -> bytes:
        """The next unseen image of one class (a prevalence change; the others are skipped)."""
        while True:
            data = next(unseen)
            if truth[-1] == label:
                return data
            truth.pop()  # skipped: never sent

    def check() -> dict:
        return monitoring.check_model(engine, store, model_id, actor="bench")

    def configure(model_ref: str, changes: dict) -> None:
        with session_scope(engine) as session:
            found = session.get(Model, model_ref)
            found.monitoring = {**(found.monitoring or {}), **changes}

    # --- unshifted windows: false alarms
    windows = alarms = 0
    reasons: list[str] = []
    while windows * args.window + 4 * 2 * args.window <= len(held_out) - args.window:
        for _ in range(args.window):
            send(next(unseen))
        windows += 1
        event = check()
        if event["status"] == "breach":
            alarms += 1
            reasons += event["breaches"]
        if windows >= 20:
            break
    print(f"\nunshifted held-out Br35H images: {windows} windows of {args.window} requests, "
          f"{alarms} alarm(s): false-alarm rate {alarms / max(windows, 1):.2f}"
          f"{' (' + ', '.join(sorted(set(reasons))) + ')' if reasons else ''}")  # fmt: skip

    # --- shifted streams: detection delay
    tiles = nuclei_tiles()
    noise_rng = np.random.default_rng(12)
    shifts: dict[str, Callable[[int], bytes]] = {
        "contrast x0.5": lambda i: contrast_halved(next(unseen)),
        "brightness +40": lambda i: brighter(next(unseen)),
        "nuclei tiles (wrong modality)": lambda i: tiles[i % len(tiles)],
        "Gaussian blur sigma 2": lambda i: blurred(next(unseen)),
        "4x lower resolution": lambda i: lower_resolution(next(unseen)),
        "noise sigma 12": lambda i: noisy(next(unseen), noise_rng),
        "JPEG quality 30": lambda i: recompressed(next(unseen)),
        "prevalence: tumours only": lambda i: of_class(1),
    }
    print(f"shifted inputs (a check every {args.step} requests on the newest {args.window}; "
          "balanced accuracy measured on the shifted window's true labels, where they exist, "
          "against the estimate from the model's probabilities):")  # fmt: skip
    for name, make in shifts.items():
        for _ in range(args.window):  # a clean window first
            send(next(unseen))
        before = check()
        delay = None
        for i in range(1, 2 * args.window + 1):
            send(make(i))
            if i % args.step == 0:
                event = check()
                if event["status"] == "breach" and delay is None:
                    delay, fired = i, event["breaches"]
                if i >= args.window and delay is not None:
                    break
        window_event = check()  # the newest window: shifted requests only
        estimated = window_event["details"].get("estimatedPerformance") or {}
        estimate = (estimated.get("balancedAccuracy") or {}).get("value")
        real = "n/a (no labels)" if name.startswith("nuclei") else f"{measured(args.window):.3f}"
        what = (
            f"alarm after {delay} requests ({delay / args.window:.2f} windows): {', '.join(fired)}"
            if delay
            else "no alarm within 2 windows"
        )
        shown = "n/a" if estimate is None else f"{estimate:.3f}"
        print(f"  {name:30s} clean window: {before['status']}; {what}; balanced accuracy "
              f"{real}, estimated {shown}")  # fmt: skip

    # --- one site's images change: its own windows against the whole window's
    big = 3 * args.window
    per_site = {"windowSize": big, "minSamples": args.window, "subgroups": ["site"]}
    configure(model_id, per_site)
    alarms, reasons = 0, []
    for _ in range(args.site_windows):
        for _ in range(big):
            send(next(unseen))
        event = check()
        if event["status"] == "breach":
            alarms += 1
            reasons += event["breaches"]
    print(f"\nclean windows of {big} requests with a window per site (3 sites, at least "
          f"{args.window} each): {alarms} of {args.site_windows} alarmed"
          f"{' (' + ', '.join(sorted(set(reasons))) + ')' if reasons else ''}")  # fmt: skip
    print(f"one site's images change ({sites[2]}, a third of the traffic; a check every "
          f"{args.step} requests on the newest {big}, minSamples {args.window}, each site's "
          "window against its own part of the reference):")  # fmt: skip
    changes: dict[str, Callable[[bytes], bytes]] = {
        "noise sigma 12": lambda d: noisy(d, noise_rng),
        "Gaussian blur sigma 2": blurred,
        "JPEG quality 30": recompressed,
    }
    for name, change in changes.items():
        found = {}
        for subgroups in ([], ["site"]):
            configure(model_id, {**per_site, "subgroups": subgroups})
            for _ in range(big):  # a clean window first
                send(next(unseen))
            before = check()
            delay, fired = None, []
            for i in range(1, 2 * big + 1):
                data = next(unseen)
                send(change(data) if current["site"] == sites[2] else data)
                if i % args.step == 0:
                    event = check()
                    if event["status"] == "breach":
                        delay, fired = i, event["breaches"]
                        break
            clean = (
                ""
                if before["status"] == "ok"
                else (f" (the clean window before it alarmed too: {', '.join(before['breaches'])})")
            )
            found[bool(subgroups)] = (
                f"alarm after {delay} requests ({delay / big:.2f} windows of {big}): "
                f"{', '.join(fired[:3])}"
                if delay
                else f"no alarm within 2 windows of {big}"
            ) + clean
        print(f"  {name:24s} whole window only: {found[False]}")
        print(f"  {'':24s} and per site:       {found[True]}")

    # --- the prediction log's overhead per request
    sample_images = [next(unseen) for _ in range(100)]
    costs = []
    for data in sample_images:
        t = time.perf_counter()
        stats = image_statistics(data)
        with session_scope(engine) as session:
            prediction_log.record_prediction(session, model_id=model_id, run_id=run_id,
                                             statistics=stats, output={"label": 0})  # fmt: skip
        costs.append((time.perf_counter() - t) * 1000)
    stats_only = []
    for data in sample_images:
        t = time.perf_counter()
        image_statistics(data)
        stats_only.append((time.perf_counter() - t) * 1000)
    median_request = statistics.median(latencies)
    median_log = statistics.median(costs)
    print(f"\nprediction log per request (100 Br35H images, {db}): median {median_log:.2f} ms "
          f"(p95 {np.percentile(costs, 95):.2f} ms; image statistics alone "
          f"{statistics.median(stats_only):.2f} ms) of a median request of {median_request:.1f} "
          f"ms over {len(latencies)} requests ({median_log / median_request:.1%})")  # fmt: skip
    stop_old_endpoints(engine, model_id, keep=None, actor="bench")
    return 0


if __name__ == "__main__":
    sys.exit(main())
