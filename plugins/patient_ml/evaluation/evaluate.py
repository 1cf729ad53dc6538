"""Evaluate a run: the challenger (its best trial) and the champion at run time are both served
through the contract's `serve`, both get every confirmed test example of the run's snapshot,
and the platform computes the test metrics from their answers with the same code.

The champion is evaluated on the *challenger's* snapshot, so both are scored on the same test
examples (the report lists the example ids and their hash). A run without a champion is
scored alone and says so; a champion that cannot be served fails the evaluation instead of
letting the challenger win against nothing.

imgClf: the challenger's operating point (its decision threshold, `operating_point`) is chosen
by the platform from the challenger's answers on the validation split, served in the same
session as the test split; the champion is scored at the point stored with its own run.
Sensitivity, specificity, PPV and NPV at each model's point join the threshold-free metrics.

Every metric gets a 95 % interval that resamples the examples' independence clusters (the
manifest's `cluster`, else `patientKey`; `patient_ml.evaluation.intervals`), and the
challenger - champion differences are paired. A test example with a verified copy in the train
split (`copiesInSplits`, a link found after the split was stored) is left out and counted.

The progress messages (served at, scored in, no champion, the failure) are also kept as the
run's `evaluation` log object (`runs/<run>/logs/evaluation.jsonl`, see
`patient_ml.log_records`) for the logs API; the per-example answers never are.

`patient_ml.services.evaluation_run.evaluate_run` reads the run and its champion from the
product DB, runs these steps and records the result on the run.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import math
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from PIL import Image

from patient_ml.db.models import Run
from patient_ml.evaluation.failure_cases import compute_failure_cases, normalised
from patient_ml.evaluation.intervals import (
    ClassificationStatistic,
    ClusterBootstrap,
    Joined,
    SegmentationStatistic,
    Statistic,
)
from patient_ml.evaluation.metrics import (
    classification_metrics,
    pixel_counts,
    segmentation_metrics_of_counts,
)
from patient_ml.evaluation.operating_point import (
    OperatingPoint,
    OperatingPointError,
    OperatingPointStatistic,
    choose,
    for_champion,
    resolve,
)
from patient_ml.evaluation.subgroups import SubgroupPlan, missing_counts, subgroup_strata
from patient_ml.exceptions import PatientMLError
from patient_ml.log_records import ProgressLog, run_logs_prefix
from patient_ml.serving.artifacts import fetch_model
from patient_ml.serving.base import ModelServing
from patient_ml.serving.client import explain, invoke, invoke_batch
from patient_ml.serving.errors import ServingError
from patient_ml.storage import ArtifactStore
from patient_ml.training.channels import iter_manifest, manifest_key, snapshot_prefix

log = logging.getLogger("patient_ml.evaluation")

MAX_BAD_ANSWERS_SHOWN = 3


def evaluation_log_key(run_id: str) -> str:
    """The evaluation's progress messages (stage `evaluation`), read by the logs API."""
    return f"{run_logs_prefix(run_id)}/evaluation.jsonl"


class EvaluationError(PatientMLError):
    """The evaluation could not score a model on the test split."""


@dataclass(frozen=True)
class TestExample:
    id: str
    image_key: str
    label: int | None  # imgClf: the confirmed class index
    mask_key: str | None  # imgSeg: the confirmed mask
    cluster: str = ""  # its independence cluster (patient, or copy group where larger)
    attributes: tuple[tuple[str, str], ...] = ()  # subgroup attributes (manifest `attributes`)


@dataclass(frozen=True)
class Contender:
    role: str  # challenger | champion
    run_id: str
    image: str
    artifact_uri: str | None
    artifact_sha256: str | None
    labels: tuple[int, ...]  # label indices its run was trained on
    # imgClf: the challenger's `operatingPoint` config (None: the default rule), chosen on
    # validation; the champion's operating point stored with its run (None: none stored).
    operating_rule: dict[str, Any] | None = None
    stored_point: dict[str, Any] | None = None


@dataclass(frozen=True)
class TestSet:
    dataset_id: str
    snapshot_id: str
    problem_type: str
    labels: tuple[tuple[int, str], ...]  # (index, name)
    examples: tuple[TestExample, ...]
    cluster_field: str = "cluster"  # the manifest field clusters came from (see CLUSTER_FIELDS)
    left_out: tuple[str, ...] = ()  # confirmed test examples with a copy in train, left out

    @property
    def ids_sha256(self) -> str:
        return hashlib.sha256("\n".join(e.id for e in self.examples).encode()).hexdigest()

    @property
    def clusters(self) -> int:
        return len({e.cluster for e in self.examples})


CLUSTER_FIELDS = ("cluster", "patientKey", "id")
"""Where an example's independence cluster comes from, first present wins: `cluster` (snapshot
format 2: patient, identical images and verified copies joined), `patientKey` (format 1), the
example's own id (a manifest with neither: each example stands alone)."""


def _cluster_of(entry: dict[str, Any]) -> tuple[str, str]:
    for field in CLUSTER_FIELDS:
        if entry.get(field):
            return str(entry[field]), field
    return str(entry["id"]), "id"


def load_test_set(store: ArtifactStore, dataset_id: str, snapshot_id: str) -> TestSet:
    """The confirmed test examples of a snapshot with their clusters, less those with a copy in
    the train split (counted in `left_out`)."""
    return with_test_examples(load_split(store, dataset_id, snapshot_id, "test"))


def with_test_examples(test: TestSet) -> TestSet:
    """`test` (a snapshot's test split) when it holds a confirmed example, else the error that
    says no model can be evaluated on it."""
    if not test.examples:
        also = f" ({len(test.left_out)} left out: a copy is in train)" if test.left_out else ""
        raise EvaluationError(
            f"Snapshot {test.snapshot_id[:12]} has no confirmed examples in its test split{also}, "
            "so no model can be evaluated.",
            fix="confirm labels of test-split images (or add data) and run again",
        )
    return test


def load_split(store: ArtifactStore, dataset_id: str, snapshot_id: str, split: str) -> TestSet:
    """The confirmed examples of one split of a snapshot (may be none), as `load_test_set`."""
    return load_splits(store, dataset_id, snapshot_id, (split,))[split]


def load_splits(
    store: ArtifactStore, dataset_id: str, snapshot_id: str, splits: Sequence[str]
) -> dict[str, TestSet]:
    """The confirmed examples of each of `splits` (each may be none), from one read of the
    manifest: validation and test examples with a copy in train are left out (`left_out`)."""
    entries = iter_manifest(store, manifest_key(dataset_id, snapshot_id))
    header = next(entries)
    examples: dict[str, list[TestExample]] = {split: [] for split in splits}
    left_out: dict[str, list[str]] = {split: [] for split in splits}
    fields: dict[str, set[str]] = {split: set() for split in splits}
    for entry in entries:
        label, split = entry["label"], entry["split"]
        if split not in examples or label.get("status") != "confirmed":
            continue
        if "train" in (entry.get("copiesInSplits") or ()):
            left_out[split].append(entry["id"])
            continue
        cluster, field = _cluster_of(entry)
        fields[split].add(field)
        examples[split].append(
            TestExample(
                id=entry["id"],
                image_key=entry["image"]["key"],
                label=(label.get("classes") or [None])[0],
                mask_key=(label.get("mask") or {}).get("key"),
                cluster=f"{field}:{cluster}",
                attributes=tuple(
                    sorted(
                        (str(k), str(v)) for k, v in (entry.get("attributes") or {}).items() if v
                    )
                ),
            )
        )
    labels = tuple((int(x["index"]), str(x["name"])) for x in header["labels"])
    found = {}
    for split in splits:
        if left_out[split]:
            log.info("snapshot %s: %d confirmed %s example(s) left out: a copy is in train",
                     snapshot_id[:12], len(left_out[split]), split)  # fmt: skip
        # the most specific cluster field present in the split
        field = next((f for f in CLUSTER_FIELDS if f in fields[split]), "id")
        found[split] = TestSet(dataset_id, snapshot_id, header["problemType"], labels,
                               tuple(examples[split]), cluster_field=field,
                               left_out=tuple(left_out[split]))  # fmt: skip
    return found


def contender(run: Run, role: str) -> Contender:
    config = run.config or {}
    labels = config.get("problemDefinition", {}).get("labelDefinition", {}).get("labels", [])
    return Contender(
        role=role,
        run_id=run.id,
        image=config["deployApproach"]["inferenceImage"],
        artifact_uri=run.model_artifact_uri,
        artifact_sha256=run.model_artifact_sha256,
        labels=tuple(sorted(int(x["index"]) for x in labels if x.get("index") is not None)),
        operating_rule=config.get("operatingPoint") if role == "challenger" else None,
        stored_point=run.operating_point if role == "champion" else None,
    )


class Scorer:
    """Sends every test example to one served model (`who`, for messages) and scores its
    answers."""

    def __init__(self, store: ArtifactStore, test: TestSet, who: str, workers: int = 4) -> None:
        self.store = store
        self.test = test
        self.who = who
        self.workers = workers
        self.prefix = snapshot_prefix(test.dataset_id)
        self.indices = [index for index, _ in test.labels]

    def predict(self, url: str, examples: tuple[TestExample, ...] | None = None) -> list[Any]:
        """The parsed answers of the served model at `url` for `examples` (default: the test
        set's), in their order."""
        who = self.who

        def one(example: TestExample) -> list[float] | np.ndarray:
            data = self.store.read_bytes(f"{self.prefix}/{example.image_key}")
            try:
                answer = invoke(url, data)
            except ServingError as exc:
                raise EvaluationError(
                    f"{who} failed on test example {example.id}: {exc.message}", fix=exc.fix
                ) from None
            return self._parse(answer, example, who)

        with ThreadPoolExecutor(self.workers, thread_name_prefix="evaluate") as pool:
            return list(pool.map(one, self.test.examples if examples is None else examples))

    def _parse(self, answer: object, example: TestExample, who: str) -> list[float] | np.ndarray:
        if self.test.problem_type == "imgClf":
            return self._probabilities(answer, example, who)
        return self._mask(answer, example, who)

    def _probabilities(self, answer: object, example: TestExample, who: str) -> list[float]:
        items = answer.get("predictions") if isinstance(answer, dict) else answer
        if not isinstance(items, list) or not items:
            raise EvaluationError(
                f"{who} answered test example {example.id} without a predictions list.",
                fix='answer {"predictions": [{"index": <label index>, "confidence": <0..1>}]}',
            )
        scores = dict.fromkeys(self.indices, 0.0)
        for item in items:
            try:
                index, confidence = int(item["index"]), float(item["confidence"])
            except (KeyError, TypeError, ValueError):
                raise EvaluationError(
                    f"{who} answered test example {example.id} with a prediction that lacks a "
                    f"numeric index and confidence: {str(item)[:120]}",
                    fix='each prediction needs {"index": <label index>, "confidence": <0..1>}',
                ) from None
            if not math.isfinite(confidence) or confidence < 0:
                raise EvaluationError(
                    f"{who} gave test example {example.id} the confidence {confidence} for label "
                    f"{index}.",
                    fix="confidences must be finite and not negative",
                )
            if index in scores:
                scores[index] += confidence
        if sum(scores.values()) <= 0:
            raise EvaluationError(
                f"{who} gave no confidence to any label of the dataset ({self.indices}) for test "
                f"example {example.id}.",
                fix="predict the dataset's label indices",
            )
        return [scores[i] for i in self.indices]

    def _mask(self, answer: object, example: TestExample, who: str) -> np.ndarray:
        try:
            if not isinstance(answer, dict):  # as indexing it would: caught below
                raise TypeError(f"{type(answer).__name__} is not an answer object")
            raw = base64.b64decode(answer["mask"], validate=True)
            mask = np.asarray(Image.open(io.BytesIO(raw)))
        except Exception:
            raise EvaluationError(
                f"{who} answered test example {example.id} without a readable mask.",
                fix='answer {"mask": <base64 PNG, pixel = label index>, "width", "height"}',
            ) from None
        if mask.ndim != 2:
            raise _mask_shape_error(who, example, mask.shape, None)
        return mask.astype(np.int64)

    def truth_mask(self, example: TestExample) -> np.ndarray:
        data = self.store.read_bytes(f"{self.prefix}/{example.mask_key}")
        return np.asarray(Image.open(io.BytesIO(data))).astype(np.int64)

    def score(
        self, predictions: list[Any], point: OperatingPoint | None = None
    ) -> tuple[dict[str, Any], Statistic]:
        """The metrics of the answers, and what their intervals are computed from; imgClf with
        `point`: also those at the operating point (`atOperatingPoint`, by label index)."""
        names = [name for _, name in self.test.labels]
        if self.test.problem_type == "imgClf":
            truths = [int(e.label) for e in self.test.examples if e.label is not None]
            metrics = classification_metrics(self.indices, truths, predictions)
            statistic: Statistic = ClassificationStatistic.of(
                self.indices, truths, predictions, names
            )
            if point is not None:
                at = OperatingPointStatistic.of(point, self.test.labels, truths, predictions)
                metrics["operatingPoint"] = point.wire()
                metrics["atOperatingPoint"] = {
                    str(self.indices[c]): found for c, found in at.counts().items()
                }
                statistic = Joined((statistic, at))
            return metrics, statistic
        counts = []  # each truth mask read once, here
        for example, predicted in zip(self.test.examples, predictions, strict=True):
            truth = self.truth_mask(example)
            if predicted.shape != truth.shape:
                raise _mask_shape_error(self.who, example, predicted.shape, truth.shape)
            counts.append(pixel_counts(self.indices, truth, predicted))
        total = np.sum(counts, axis=0) if counts else np.zeros((len(self.indices), 3), np.int64)
        return (
            segmentation_metrics_of_counts(self.indices, total),
            SegmentationStatistic.of(self.indices, counts, names),
        )


def _mask_shape_error(
    who: str, example: TestExample, shape: tuple[int, ...], truth: tuple[int, ...] | None
) -> EvaluationError:
    size = f"; the image is {truth[1]}x{truth[0]}" if truth else ""
    return EvaluationError(
        f"{who} answered test example {example.id} with a mask of shape {shape}{size}.",
        fix="return a single-channel mask of the input image's size",
    )


@dataclass(frozen=True)
class Scored:
    """One model's result for the report (metrics and answers), and what its intervals are
    computed from."""

    result: dict[str, Any]
    statistic: Statistic
    failure_cases: dict[str, Any] | None = None  # the challenger's (imgClf), when asked for


def evaluate_model(
    who: Contender,
    test: TestSet,
    store: ArtifactStore,
    server: ModelServing,
    workdir: Path,
    *,
    name: str,
    progress: ProgressLog | None = None,
    validation: TestSet | None = None,
    failure_cases: int = 0,
    run_id: str | None = None,
) -> Scored:
    """Serve one model, score it on the test set, stop it; its metrics and answers.

    imgClf: the challenger's operating point is chosen on its answers for `validation` (served
    in the same session; see `operating_point`), the champion's is the one stored with its run.
    With `failure_cases` > 0 (imgClf, the challenger): that many most confident errors per true
    label, with saliency maps, computed while it is served (`failure_cases`; pictures stored
    under run `run_id`); their time is not part of the result's `seconds`. The server is
    labelled with `run_id` (the evaluating run), so the run's end stops it if this task dies.
    Progress goes to `progress` (recorded for the run's logs) or only to the task log."""
    say = progress or ProgressLog(log)
    what = f"The {who.role} (run {who.run_id})"
    try:
        model_dir = fetch_model(
            store, who.artifact_uri, who.artifact_sha256, workdir / f"{who.role}-model", who=what
        )
    except PatientMLError as exc:  # named "The champion (run ...): its model artifact ..."
        raise EvaluationError(exc.message, fix=exc.fix) from None
    started = time.monotonic()
    try:
        handle = server.start(
            name=name,
            image=who.image,
            model_dir=model_dir,
            labels={"run": run_id} if run_id else None,
        )
    except PatientMLError as exc:
        raise EvaluationError(f"{what} cannot be served: {exc.message}", fix=exc.fix) from None
    try:
        say.info("%s is served at %s (%s); scoring %d test examples", what, handle.url,
                 server.kind, len(test.examples))  # fmt: skip
        scorer = Scorer(store, test, what)
        answers = scorer.predict(handle.url)
        point = _operating_point(who, test, validation, scorer, handle.url, say)
        failures = None
        if failure_cases > 0 and who.role == "challenger" and test.problem_type == "imgClf":
            failures = _failure_cases(
                run_id or who.run_id, test, store, scorer, handle.url, answers, point,
                failure_cases, say,
            )  # fmt: skip
    finally:
        server.stop(handle.handle)
        shutil.rmtree(model_dir, ignore_errors=True)
    metrics, statistic = scorer.score(answers, point)
    seconds = time.monotonic() - started
    if failures is not None:
        seconds -= failures["cost"]["seconds"]
        failures["cost"]["evaluationSeconds"] = round(seconds, 2)
    seconds = round(seconds, 2)
    say.info("%s scored in %.1f s: %s", what, seconds, headline(metrics))
    result = {
        "runId": who.run_id,
        "image": who.image,
        "serverKind": server.kind,
        "imageDigest": server.image_digest(who.image),
        "metrics": metrics,
        "answers": _answers_for_report(test, answers),
        "seconds": seconds,
    }
    return Scored(result, statistic, failures)


OCCLUDED = TestExample(id="(an occluded copy)", image_key="", label=None, mask_key=None)


def _failure_cases(
    run_id: str,
    test: TestSet,
    store: ArtifactStore,
    scorer: Scorer,
    url: str,
    answers: list[Any],
    point: OperatingPoint | None,
    per_class: int,
    say: ProgressLog,
) -> dict[str, Any]:
    """The challenger's most confident test errors with saliency maps, through the model served
    at `url` (see `patient_ml.evaluation.failure_cases`)."""

    def probabilities(images: list[bytes]) -> np.ndarray:
        found = invoke_batch(url, images)
        return normalised([scorer._probabilities(a, OCCLUDED, scorer.who) for a in found])

    section = compute_failure_cases(
        run_id,
        example_ids=[e.id for e in test.examples],
        truths=[int(e.label) for e in test.examples if e.label is not None],
        answers=answers,
        labels=test.labels,
        point=point,
        read_image=lambda row: store.read_bytes(f"{scorer.prefix}/{test.examples[row].image_key}"),
        probabilities=probabilities,
        explainer=lambda data, index: explain(url, data, index),
        store=store,
        per_class=per_class,
        clusters=[e.cluster for e in test.examples],
    )
    cost = section["cost"]
    say.info("failure cases: %d most confident error(s) explained (%s) in %.1f s: %d images in "
             "%d requests", len(section["cases"]), " + ".join(section["methods"]),
             cost["seconds"], cost["images"], cost["requests"])  # fmt: skip
    return section


def _operating_point(
    who: Contender,
    test: TestSet,
    validation: TestSet | None,
    scorer: Scorer,
    url: str,
    say: ProgressLog,
) -> OperatingPoint | None:
    """imgClf: the champion's stored point, or the challenger's chosen on `validation` (its
    answers asked from the model served at `url`); None for imgSeg."""
    if test.problem_type != "imgClf":
        return None
    what = f"The {who.role} (run {who.run_id})"
    if who.role == "champion":
        point = for_champion(who.stored_point, test.labels)
        say.info("%s decides at its stored operating point: %s", what, point.describe())
        return point
    try:
        wanted = resolve(who.operating_rule, test.labels)
        examples = validation.examples if validation is not None else ()
        if wanted.needs_validation and examples:
            started = time.monotonic()
            answers = scorer.predict(url, examples)
            truths = [int(e.label) for e in examples if e.label is not None]
            point = choose(wanted, scorer.indices, truths, answers)
            say.info("%s: operating point chosen on %d validation images in %.1f s: %s", what,
                     len(examples), time.monotonic() - started, point.describe())  # fmt: skip
            return point
        point = choose(wanted, scorer.indices, [], np.zeros((0, len(scorer.indices))))
    except OperatingPointError as exc:
        raise EvaluationError(f"{what}: {exc.message}", fix=exc.fix) from None
    say.info("%s: operating point: %s", what, point.describe())
    return point


def headline(metrics: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float) and not k.startswith("_")
    )


def _answers_for_report(test: TestSet, answers: list[Any]) -> list[dict[str, Any]]:
    if test.problem_type == "imgClf":
        indices = [index for index, _ in test.labels]
        return [
            {"id": e.id, "confidences": dict(zip(map(str, indices), [round(p, 6) for p in a],
                                                 strict=True))}
            for e, a in zip(test.examples, answers, strict=True)
        ]  # fmt: skip
    return [
        {"id": e.id, "pixels": int(a.size)} for e, a in zip(test.examples, answers, strict=True)
    ]


def evaluation_report_key(run_id: str) -> str:
    return f"runs/{run_id}/evaluation/report.json"


def keep_evaluation_log(store: ArtifactStore, run_id: str, progress: ProgressLog) -> None:
    """Best effort: the evaluation's outcome never depends on keeping its log."""
    key = evaluation_log_key(run_id)
    try:
        store.put_bytes(key, progress.data())
    except Exception as exc:
        log.warning("the evaluation log of run %s was not kept at %s: %s", run_id, key, exc)


def evaluate_contenders(
    run_id: str,
    challenger: Contender,
    champion: Contender | None,
    test: TestSet,
    store: ArtifactStore,
    server: ModelServing,
    workdir: Path,
    *,
    progress: ProgressLog,
    validation: TestSet | None = None,
    failure_cases: int = 0,
    subgroups: SubgroupPlan | None = None,
) -> tuple[dict[str, Any], str]:
    """Score the challenger, and the champion if there is one, on `test`; store the report.
    imgClf: the challenger's operating point is chosen on `validation` (see `evaluate_model`),
    and with `failure_cases` > 0 its most confident errors get saliency maps.

    Returns the report and its URI in the artifact store."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    progress.info(
        "evaluating run %s on %d confirmed test examples (%d independent clusters) of snapshot "
        "%s (test-set sha256 %s)",
        run_id, len(test.examples), test.clusters, test.snapshot_id[:12], test.ids_sha256[:12],
    )  # fmt: skip
    if test.left_out:
        progress.info("%d test example(s) left out: a copy is in train", len(test.left_out))
    scored = {
        "challenger": evaluate_model(
            challenger,
            test,
            store,
            server,
            workdir,
            name=f"pml-eval-{run_id[:8]}-challenger",
            progress=progress,
            validation=validation,
            failure_cases=failure_cases,
            run_id=run_id,
        )
    }
    if champion is None:
        progress.info(
            "run %s has no champion to compare with: this is the model's first run", run_id
        )
    else:
        scored["champion"] = evaluate_model(
            champion,
            test,
            store,
            server,
            workdir,
            name=f"pml-eval-{run_id[:8]}-champion",
            progress=progress,
            run_id=run_id,
        )
    report = build_report(
        run_id, test, scored, challenger, champion, progress=progress, subgroups=subgroups
    )
    key = evaluation_report_key(run_id)
    store.put_bytes(key, orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    return report, store.uri(key)


def build_report(
    run_id: str,
    test: TestSet,
    scored: dict[str, Scored],
    challenger: Contender,
    champion: Contender | None,
    *,
    progress: ProgressLog,
    subgroups: SubgroupPlan | None = None,
) -> dict[str, Any]:
    """The evaluation report of scored models (`scored["challenger"]`, and
    `scored["champion"]` when there is one): their results with cluster-bootstrap intervals
    and the paired differences; with `subgroups`, the same per subgroup of the test set
    (`patient_ml.evaluation.subgroups`)."""
    started = time.monotonic()
    boot = ClusterBootstrap([e.cluster for e in test.examples])
    compared = boot.compare(
        scored["challenger"].statistic, scored["champion"].statistic if champion else None
    )
    progress.info("intervals: %d resamples of the %d independent clusters, %d interval(s) in "
                  "%.1f s", boot.resampling.resamples, boot.resampling.clusters,
                  len(compared.challenger) * len(scored) + len(compared.differences),
                  time.monotonic() - started)  # fmt: skip
    results: dict[str, Any] = {}
    for role, found in (("challenger", compared.challenger), ("champion", compared.champion)):
        if role in scored and found is not None:
            results[role] = {
                **scored[role].result,
                "intervals": {
                    "images": len(test.examples),
                    "clusters": test.clusters,
                    "metrics": {name: i.wire() for name, i in found.items()},
                },
            }
    report = {
        "format": "patient-ml-evaluation/2",
        "runId": run_id,
        "snapshotId": test.snapshot_id,
        "problemType": test.problem_type,
        "labels": [{"index": i, "name": n} for i, n in test.labels],
        "testExamples": len(test.examples),
        "testClusters": test.clusters,
        "clusterField": test.cluster_field,
        "testExampleIds": [e.id for e in test.examples],
        "testSetSha256": test.ids_sha256,
        "testExamplesLeftOut": len(test.left_out),
        "leftOutExampleIds": list(test.left_out),
        "resampling": compared.resampling.model_dump(),
        "differences": {name: i.wire() for name, i in compared.differences.items()},
        "championId": champion.run_id if champion else None,
        "labelsChanged": bool(champion and set(champion.labels) != set(challenger.labels)),
        **results,
    }
    if scored["challenger"].failure_cases is not None:
        report["failureCases"] = scored["challenger"].failure_cases
    if subgroups is not None and subgroups.attributes and any(e.attributes for e in test.examples):
        # (a snapshot without attributes, e.g. written before them, gives no subgroups)
        started = time.monotonic()
        attributes = [dict(e.attributes) for e in test.examples]
        strata = subgroup_strata(
            plan=subgroups,
            attributes=attributes,
            clusters=[e.cluster for e in test.examples],
            labels=test.labels,
            truths=[e.label for e in test.examples],
            challenger=scored["challenger"].statistic,
            champion=scored["champion"].statistic if champion else None,
            resamples=boot.resampling.resamples,
            seed=boot.resampling.seed,
        )
        report["subgroupSettings"] = {
            **subgroups.wire(),
            "missing": missing_counts(attributes, subgroups),
        }
        report["subgroups"] = strata
        progress.info("subgroups: %d (%d flagged small, under %d clusters) in %.1f s",
                      len(strata), sum(s["small"] for s in strata), subgroups.min_clusters,
                      time.monotonic() - started)  # fmt: skip
    return report
