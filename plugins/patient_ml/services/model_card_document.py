"""Assemble a run's model card document (`patient_ml.evaluation.model_card.ModelCardDocument`)
from what is stored: the model (its declared `modelCard`), the dataset (FHIR source, inclusion
codes, labels), the snapshot and its curation report (counts per split, patients, clusters,
labels, near-duplicates), the run's evaluation (metrics with their intervals, deltas,
operating point, reliability, and — when the evaluation reports them — `subgroups` and
`failureCases`), the decisions and the deployment. Limitations the model config declares come
first, then those derived from the run (see `derived_limitations`).

Nothing in the document is null, nothing is a server path: free text that could hold one
(notes, errors) passes through `public_text`, and URIs are kept only when they are http(s)."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy.orm import Session

from patient_ml import __version__
from patient_ml.config.models import ModelCardSettings
from patient_ml.config.platform_metrics import (
    AT_OPERATING_POINT,
    PLATFORM_METRICS,
    direction_of,
    plain_name,
)
from patient_ml.db.models import Dataset, Model, Run, Snapshot, utcnow
from patient_ml.db.require import present
from patient_ml.evaluation.model_card import (
    NOT_RECORDED,
    ApprovalPart,
    Calibration,
    CardLabel,
    CardModelRef,
    CardOperatingPoint,
    CardProblem,
    CardRun,
    Decision,
    DeploymentPart,
    Estimate,
    FailureCase,
    FailureClass,
    FailureGallery,
    FhirSource,
    Hyperparameter,
    IntendedUse,
    LabelShare,
    Limitation,
    Lineage,
    MapLink,
    MetricRow,
    ModelCardDocument,
    Performance,
    Population,
    Prevalence,
    Provenance,
    ReliabilityBin,
    SplitCounts,
    Subgroup,
    iso_time,
    public_text,
)
from patient_ml.evaluation.operating_point import stored
from patient_ml.services.approval_state import approval_status, decisions_of, min_approvers_of
from patient_ml.services.evaluations import evaluation_intervals, evaluation_metrics
from patient_ml.services.provenance import provenance_of
from patient_ml.services.runs import get_run
from patient_ml.training.provenance import tag_move_text

SPLITS = ("train", "validation", "test")
PROBLEM_TITLES = {"imgClf": "Image classification", "imgSeg": "Image segmentation"}
# Below these, the card says the evidence is thin (docs/model-card.md).
MIN_TEST_CLUSTERS = 30
MAX_CALIBRATION_ERROR = 0.05
MAX_WORSE_LISTED = 6
MAX_FAILURE_CASES = 12


def build_model_card_document(session: Session, run_id: str) -> ModelCardDocument:
    run = get_run(session, run_id)
    model = present(session.get(Model, run.model_id), f"model of run {run_id}")
    dataset = present(session.get(Dataset, model.dataset_id), f"dataset of model {model.id}")
    snapshot = session.get(Snapshot, run.snapshot_id) if run.snapshot_id else None
    evaluation = run.evaluation or {}
    problem = run.config["problemDefinition"]
    problem_type = problem["problemType"]
    declared = ModelCardSettings.model_validate(model.model_card or {})
    performance = _performance(session, run, evaluation, problem_type)
    population = _population(snapshot, evaluation, problem_type)
    calibration = _calibration(performance, evaluation, problem_type)
    gallery = _failure_gallery(evaluation, problem, model.id, run.id)
    return ModelCardDocument(
        title=f"Model card: {model.name} — run {run.slug}",
        generated_at=iso_time(utcnow()),
        model=CardModelRef(id=model.id, name=model.name, revision=run.model_revision),
        run=CardRun(
            id=run.id,
            slug=run.slug,
            status=run.status,
            triggered_by=run.triggered_by,
            started=iso_time(run.started_at),
            ended=iso_time(run.ended_at) if run.ended_at else None,
        ),
        problem=CardProblem(
            problem_type=problem_type,
            title=PROBLEM_TITLES.get(problem_type, problem_type),
            labels=[
                CardLabel(
                    index=int(x["index"]), name=x["name"], description=x.get("description") or None
                )
                for x in sorted(problem["labelDefinition"]["labels"], key=lambda x: x["index"])
            ],
        ),
        intended_use=IntendedUse(
            summary=public_text(declared.intended_use or model.description)
            or "Not recorded: the model config has neither modelCard.intendedUse nor a "
            "description.",
            declared=bool(declared.intended_use),
            intended_users=[public_text(x) for x in declared.intended_users],
            out_of_scope=[public_text(x) for x in declared.out_of_scope],
        ),
        provenance=_provenance(dataset, problem, snapshot),
        population=population,
        performance=performance,
        failure_gallery=gallery,
        calibration=calibration,
        limitations=[
            Limitation(text=public_text(t), source="declared") for t in declared.limitations
        ]
        + [
            Limitation(text=t, source="derived")
            for t in derived_limitations(
                declared, snapshot, performance, population, calibration, gallery
            )
        ],
        lineage=_lineage(session, run, evaluation),
        approval=_approval(session, run, model),
        deployment=DeploymentPart(
            type=run.config["deployApproach"]["type"],
            status=run.deploy_status or "not deployed",
            error=public_text(run.deploy_error) if run.deploy_error else None,
            is_champion=model.champion_id == run.id,
        ),
    )


# ----------------------------------------------------------------------------- provenance


def fhir_source_of(source: dict[str, Any]) -> FhirSource:
    """The FHIR source by name: the Airflow connection (its id, never its host or secret), or
    the NDJSON folder's last name (never its path or bucket)."""
    kind = source.get("type") or "fhirServer"
    if kind == "ndjson":
        uri = str(source.get("uri") or "").rstrip("/")
        folder = uri.rsplit("/", 1)[-1] if uri else ""
        where = f" (folder {folder!r})" if folder and "://" not in folder else ""
        return FhirSource(kind="ndjson", name=f"FHIR NDJSON files{where}")
    conn = source.get("connId") or "fhir_default"
    bulk = " with bulk $export" if source.get("bulkExport") else ""
    return FhirSource(
        kind="fhirServer", name=f"FHIR REST server (Airflow connection {conn!r}){bulk}"
    )


def _provenance(dataset: Dataset, problem: dict[str, Any], snapshot: Snapshot | None) -> Provenance:
    report = (snapshot.report or {}) if snapshot else {}
    by_split = ((snapshot.counts or {}).get("bySplit") or {}) if snapshot else {}
    patients, clusters = report.get("patients") or {}, report.get("clusters") or {}
    near = report.get("nearDuplicates") or {}
    quarantined = (report.get("quarantined") or {}).get("total")
    return Provenance(
        dataset_name=dataset.name,
        fhir_source=fhir_source_of(dataset.source or {}),
        inclusion_codes=list((problem.get("trainingDataFilter") or {}).get("codes") or []),
        snapshot_id=snapshot.id if snapshot else None,
        snapshot_created=iso_time(snapshot.created_at) if snapshot else None,
        records_read=(report.get("records") or {}).get("read"),
        quarantined=quarantined,
        splits=[
            SplitCounts(
                split=s, images=int(by_split[s]), patients=patients.get(s), clusters=clusters.get(s)
            )
            for s in SPLITS
            if s in by_split
        ],
        near_duplicate_groups=near.get("groups"),
        test_images_with_copy_in_train=(near.get("crossSplit") or {}).get("testWithCopyInTrain"),
    )


# ----------------------------------------------------------------------------- population


def _population(
    snapshot: Snapshot | None, evaluation: dict[str, Any], problem_type: str
) -> Population:
    by_label = (
        (((snapshot.report or {}).get("examples") or {}).get("byLabel") or {}) if (snapshot) else {}
    )
    prevalence = []
    for split in SPLITS:
        counts = by_label.get(split) or {}
        total = sum(int(v) for v in counts.values())
        prevalence += [
            Prevalence(split=split, label=str(label), images=int(n), share=int(n) / total)
            for label, n in sorted(counts.items())
            if total
        ]
    groups = [_subgroup(g, problem_type) for g in evaluation.get("subgroups") or []]
    if groups:
        note = (
            f"{len(groups)} subgroups of the test set, each scored on its own images; "
            "a small subgroup's figures are uncertain."
        )
    else:
        note = (
            "No subgroup attributes recorded: performance across patient groups (e.g. sex, "
            "age band, site, scanner) is not known from this evaluation."
        )
    return Population(
        prevalence=prevalence, subgroups_recorded=bool(groups), subgroups=groups, note=note
    )


def _estimate(value: object, low: object = None, high: object = None) -> Estimate | None:
    """An Estimate from a number (or a `{value, low, high}` dict, or an Estimate); None when
    not a number."""
    if isinstance(value, Estimate):
        return value
    if isinstance(value, dict):
        given = value
        value, low, high = given.get("value"), given.get("low"), given.get("high")
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    if isinstance(low, int | float) and isinstance(high, int | float):
        return Estimate(value=float(value), low=low, high=high)
    return Estimate(value=float(value), low=None, high=None)


def _verdict(
    name: str, difference: Estimate | None
) -> Literal["better", "worse", "shownBetter", "shownWorse", "same"] | None:
    if difference is None:
        return None
    sign = 1.0 if direction_of(name) == "maximize" else -1.0
    if difference.low is not None and difference.high is not None:
        if sign * difference.low > 0 and sign * difference.high > 0:
            return "shownBetter"
        if sign * difference.low < 0 and sign * difference.high < 0:
            return "shownWorse"
    gain = sign * difference.value
    return "better" if gain > 0 else "worse" if gain < 0 else "same"


def metric_order(names: list[str], problem_type: str) -> list[str]:
    """Headline metrics in their documented order, then per-label ones at the operating point,
    then the rest by name."""
    headline = [m.name for m in PLATFORM_METRICS.values() if m.problem_type == problem_type]
    first = [n for n in headline if n in names]
    at_point = sorted(n for n in names if n.partition(":")[0] in AT_OPERATING_POINT)
    rest = sorted(n for n in names if n not in first and n not in at_point)
    return first + at_point + rest


def _row(name: str, challenger: object, champion: object, difference: object) -> MetricRow:
    diff = _estimate(difference)
    return MetricRow(
        name=name,
        title=plain_name(name),
        direction="minimize" if direction_of(name) == "minimize" else "maximize",
        challenger=_estimate(challenger),
        champion=_estimate(champion),
        difference=diff,
        verdict=_verdict(name, diff),
    )


# The subgroup table shows these (the per-label ones for each label), not every metric.
SUBGROUP_METRICS = {
    "imgClf": ("balancedAccuracy", "auroc", "sensitivity:", "specificity:"),
    "imgSeg": ("meanDice", "meanIoU", "dice:"),
}


def _shown_in_subgroups(name: str, problem_type: str) -> bool:
    wanted = SUBGROUP_METRICS.get(problem_type, ())
    return any(name == w or (w.endswith(":") and name.startswith(w)) for w in wanted)


def _subgroup(group: dict[str, Any], problem_type: str) -> Subgroup:
    """A subgroup of the evaluation's `subgroups` (`{name, images, clusters, small,
    challenger, champion, intervals: {challenger, champion}, differences, prevalence}`)."""
    challenger = group.get("challenger") or {}
    champion = group.get("champion") or {}
    intervals = group.get("intervals") or {}
    differences = group.get("differences") or {}

    def ends(role: str, name: str) -> tuple[Any, Any]:
        found = (intervals.get(role) or {}).get(name) or {}
        return found.get("low"), found.get("high")

    names = [
        n
        for n in metric_order(sorted(set(challenger) | set(champion)), problem_type)
        if _shown_in_subgroups(n, problem_type)
    ]
    prevalence = group.get("prevalence") or {}
    return Subgroup(
        name=str(group.get("name") or "unnamed"),
        images=group.get("images"),
        clusters=group.get("clusters"),
        small=bool(group.get("small")),
        prevalence=[
            LabelShare(label=str(label), share=float(share))
            for label, share in prevalence.items()
            if isinstance(share, int | float)
        ],
        metrics=[
            _row(
                n,
                _estimate(challenger.get(n), *ends("challenger", n)),
                _estimate(champion.get(n), *ends("champion", n)),
                differences.get(n),
            )
            for n in names
        ],
    )


# ----------------------------------------------------------------------------- performance


def _performance(
    session: Session, run: Run, evaluation: dict[str, Any], problem_type: str
) -> Performance:
    if not evaluation:
        return Performance(evaluated=False)
    mine = evaluation_metrics(session, run.id, "challenger")
    theirs = evaluation_metrics(session, run.id, "champion")
    my_ci = evaluation_intervals(session, run.id, "challenger")
    their_ci = evaluation_intervals(session, run.id, "champion")
    deltas = evaluation.get("deltas") or {}
    rows = []
    for name in metric_order(sorted(mine), problem_type):
        delta = deltas.get(name) or {}
        rows.append(
            _row(
                name,
                _estimate(mine[name], *my_ci.get(name, (None, None))),
                _estimate(theirs.get(name), *their_ci.get(name, (None, None))),
                _estimate(delta.get("delta"), delta.get("low"), delta.get("high")),
            )
        )
    resampling = evaluation.get("resampling") or {}
    intervals = None
    if resampling.get("resamples"):
        intervals = (
            f"{float(resampling.get('level', 0.95)):.0%} {resampling.get('method', 'bootstrap')}"
            f", {resampling['resamples']} resamples of the test set's "
            f"{resampling.get('clusters', '?')} independent {resampling.get('unit', 'cluster')}s;"
            " differences are paired (both models on the same resamples)"
        )
    champion = evaluation.get("championId")
    champion_run = session.get(Run, champion) if champion else None
    return Performance(
        evaluated=True,
        note=public_text(evaluation["note"]) if evaluation.get("note") else None,
        test_images=evaluation.get("testExamples"),
        test_clusters=evaluation.get("testClusters"),
        test_images_left_out=int(evaluation.get("testExamplesLeftOut") or 0),
        intervals=intervals,
        champion_run=f"{champion_run.slug} ({champion})" if champion_run else champion or None,
        labels_changed=bool(evaluation.get("labelsChanged")),
        metrics=rows,
        operating_point=_operating_point(evaluation),
    )


def _operating_point(evaluation: dict[str, Any]) -> CardOperatingPoint | None:
    found = (evaluation.get("operatingPoints") or {}).get("challenger")
    point = stored({k: v for k, v in found.items() if k != "counts"}) if found else None
    if point is None:
        return None
    return CardOperatingPoint(
        rule=point.rule,
        description=public_text(point.describe()),
        positive_label=point.positive_label.name if point.positive_label else None,
        threshold=point.threshold,
        target=point.target,
        validation_sensitivity=point.chosen_on.sensitivity if point.chosen_on else None,
        validation_specificity=point.chosen_on.specificity if point.chosen_on else None,
    )


# ----------------------------------------------------------------------------- failures


def _public_url(value: object) -> str | None:
    text = str(value or "")
    return text if text.lower().startswith(("https://", "http://")) else None


def picture_path(model_id: str, run_id: str, case: int, picture: str) -> str:
    """Where the API serves a failure case's picture, relative to the API's root."""
    return f"/models/{model_id}/runs/{run_id}/failure-cases/{case}/{picture}.png"


def _maps(case: dict[str, Any], model_id: str, run_id: str) -> list[MapLink]:
    """The case's pictures as the API serves them (by case number and picture name), and any
    http(s) map URLs; never a storage path."""
    links = []
    number = case.get("case")
    if isinstance(number, int) and not isinstance(number, bool):
        links += [
            MapLink(name=str(p), url=picture_path(model_id, run_id, number, str(p)))
            for p in case.get("pictures") or []
            if str(p).replace("-", "").isalnum()
        ]
    raw = case.get("maps") or {}
    pairs = list(raw.items()) if isinstance(raw, dict) else [("map", m) for m in raw]
    for name, found in pairs:
        uri = found.get("uri") or found.get("url") if isinstance(found, dict) else found
        url = _public_url(uri)
        if url:
            links.append(MapLink(name=str(name), url=url))
    return links


def _label_name(value: object, names: dict[int, str]) -> str:
    if isinstance(value, dict):
        value = value.get("name", value.get("index"))
    if isinstance(value, int) and not isinstance(value, bool):
        return names.get(value, str(value))
    return NOT_RECORDED if value is None else str(value)


def _grouped_cases(
    raw: object, names: dict[int, str]
) -> list[tuple[str, list[Any], dict[str, Any]]]:
    """(true label, its cases, its summary) from the evaluation's `failureCases`: the
    evaluation's section (`{classes: [{trueLabel, errors, images, shown}], cases: [..]}`), or
    a dict label -> cases, or a list of `{label, cases}`."""
    if isinstance(raw, dict) and isinstance(raw.get("cases"), list):
        summaries = {
            _label_name(c.get("trueLabel"), names): c
            for c in raw.get("classes") or []
            if isinstance(c, dict)
        }
        grouped: dict[str, list[Any]] = {label: [] for label in summaries}
        for case in raw["cases"]:
            if isinstance(case, dict):
                label = _label_name(case.get("trueLabel"), names)
                grouped.setdefault(label, []).append(case)
        return [(label, cases, summaries.get(label, {})) for label, cases in grouped.items()]
    if isinstance(raw, dict):
        return [(_label_name(k, names), list(v or []), {}) for k, v in raw.items()]
    if not isinstance(raw, list):  # absent (None) or of no shape above: no cases
        return []
    return [
        (_label_name(g.get("label", g.get("class")), names), list(g.get("cases") or []), {})
        for g in raw
        if isinstance(g, dict)
    ]


def _failure_gallery(
    evaluation: dict[str, Any], problem: dict[str, Any], model_id: str, run_id: str
) -> FailureGallery:
    """The evaluation's `failureCases` (per true label: the most confident wrong answers with
    their pictures), when the evaluation records them."""
    raw = evaluation.get("failureCases")
    names = {int(x["index"]): str(x["name"]) for x in problem["labelDefinition"]["labels"]}
    classes = []
    for label, found, summary in _grouped_cases(raw, names):
        cases = []
        for case in found[:MAX_FAILURE_CASES]:
            example = case.get("exampleId") or case.get("id") if isinstance(case, dict) else None
            if not example:
                continue
            confidence = case.get("confidence")
            cases.append(
                FailureCase(
                    example_id=str(example),
                    true_label=_label_name(case.get("trueLabel", case.get("truth")), names),
                    predicted_label=_label_name(
                        case.get("predictedLabel", case.get("predicted")), names
                    ),
                    confidence=float(confidence) if isinstance(confidence, int | float) else None,
                    maps=_maps(case, model_id, run_id),
                    maps_error=public_text(str(case["mapsError"]))
                    if case.get("mapsError")
                    else None,
                )
            )
        errors, images = summary.get("errors"), summary.get("images")
        if cases or errors:
            classes.append(
                FailureClass(
                    label=label,
                    errors=errors if isinstance(errors, int) else None,
                    images=images if isinstance(images, int) else None,
                    cases=cases,
                )
            )
    decided = raw.get("decidedBy") if isinstance(raw, dict) else None
    if any(c.cases for c in classes):
        note = "Test images the challenger answered wrongly, per true label, most confident first"
        note += f" (decided by {public_text(str(decided))})." if decided else "."
        note += (
            " Pictures (the image and its saliency maps) are served by the API at "
            "GET /v1/patient-ml/models/<model>/runs/<run>/failure-cases/<case>/<picture>.png."
        )
    elif raw is not None:
        note = "The evaluation recorded no failure cases (no test image was answered wrongly)."
    else:
        note = (
            "No failure cases recorded: this run's evaluation did not keep the wrongly "
            "answered test images."
        )
    return FailureGallery(recorded=raw is not None, classes=classes, note=note)


# ----------------------------------------------------------------------------- calibration


def _calibration(
    performance: Performance, evaluation: dict[str, Any], problem_type: str
) -> Calibration:
    if problem_type != "imgClf":
        return Calibration(
            recorded=False,
            note="Calibration applies to classification "
            "confidences; a segmentation model has none measured.",
        )
    by_name = {r.name: r for r in performance.metrics}
    ece = by_name.get("expectedCalibrationError")
    bins = [
        ReliabilityBin(
            confidence=float(b["confidence"]), accuracy=float(b["accuracy"]), count=int(b["count"])
        )
        for b in ((evaluation.get("reliability") or {}).get("challenger") or [])
        if isinstance(b, dict) and b.get("count")
    ]
    if ece is None and not bins:
        return Calibration(recorded=False, note="Calibration not recorded for this run.")
    return Calibration(
        recorded=True,
        challenger_error=ece.challenger if ece else None,
        champion_error=ece.champion if ece else None,
        bins=bins,
        note="Expected calibration error: the gap between the challenger's confidence and its "
        "accuracy over 10 confidence bins (0 is perfectly calibrated); the table is its "
        "reliability diagram.",
    )


# ----------------------------------------------------------------------------- limitations


def derived_limitations(
    declared: ModelCardSettings,
    snapshot: Snapshot | None,
    performance: Performance,
    population: Population,
    calibration: Calibration,
    gallery: FailureGallery,
) -> list[str]:
    """What the run itself says about the limits of its evidence, one sentence each."""
    found: list[str] = []
    if not (declared.intended_use or declared.limitations or declared.out_of_scope):
        found.append(
            "The model config declares no intended use, out-of-scope uses or "
            "limitations (modelCard): add them so this card can state them."
        )
    if not performance.evaluated:
        found.append("Not evaluated on the held-out test set yet: no performance is known.")
        return found
    clusters = performance.test_clusters
    if clusters is not None and clusters < MIN_TEST_CLUSTERS:
        found.append(
            f"The test set has only {clusters} independent clusters (patients, or groups of "
            f"copies of one image): intervals are wide and rare failure modes may not appear."
        )
    if performance.test_images_left_out:
        found.append(
            f"{performance.test_images_left_out} test images were left out because a copy of "
            "each is in the training split; the test set is smaller than the snapshot's."
        )
    if performance.champion_run is None:
        found.append("No champion to compare with: this run's figures stand alone.")
    if performance.labels_changed:
        found.append(
            "The label set changed since the champion: the comparison covers the "
            "labels both models know."
        )
    worse = [r for r in performance.metrics if r.verdict in ("worse", "shownWorse")]
    worse.sort(key=lambda r: r.verdict != "shownWorse")  # stable: in the table's order
    for row in worse[:MAX_WORSE_LISTED]:
        shown = (
            "; the 95 % interval of the difference leaves 0 out"
            if row.verdict == "shownWorse"
            else ""
        )
        found.append(f"Worse than the champion on {row.title}: {_signed(row.difference)}{shown}.")
    if len(worse) > MAX_WORSE_LISTED:
        found.append(f"… and worse on {len(worse) - MAX_WORSE_LISTED} more metrics.")
    for group in population.subgroups:
        if group.small:
            size = f"{group.images} images" if group.images is not None else "few images"
            if group.clusters is not None:
                size += f", {group.clusters} clusters"
            found.append(f"Subgroup {group.name} is small ({size}): its figures are uncertain.")
    if not population.subgroups_recorded:
        found.append(
            "No subgroup attributes recorded: performance across patient groups is unknown."
        )
    error = calibration.challenger_error
    if error is not None and error.value > MAX_CALIBRATION_ERROR:
        found.append(
            f"Confidences are miscalibrated: expected calibration error {error.value:.3f} "
            f"(above {MAX_CALIBRATION_ERROR}); read a confidence as a ranking, not a probability."
        )
    if not gallery.recorded:
        found.append("No failure cases recorded for review.")
    near = ((snapshot.report or {}).get("nearDuplicates") or {}) if snapshot else {}
    spanning = (near.get("groupsSpanningPatients") or {}).get("count")
    if spanning:
        found.append(
            f"{spanning} groups of near-identical images span several patients "
            "(possibly mis-filed patient ids) in the curated data."
        )
    return found


def _signed(difference: Estimate | None) -> str:
    return f"{difference.value:+.3f}" if difference is not None else "by its point estimate"


# ----------------------------------------------------------------------------- lineage


def _lineage(session: Session, run: Run, evaluation: dict[str, Any]) -> Lineage:
    """From the run's recorded provenance (`services.provenance`); a run without one (tuned
    before it was recorded) falls back to what its evaluation recorded of the served image,
    and the current package version, marked as such."""
    training = run.config["trainingApproach"]
    image = training["trainingImage"]
    served = (evaluation.get("images") or {}).get("challenger") or {}
    objective = training.get("objective") or {}
    found = provenance_of(session, run)
    trained = found.training if found else None
    inference = found.inference if found else None
    trainer = found.trainer if found else None
    package = found.package if found else None
    digest = trained.digest if trained else None
    if digest is None and served.get("image") == image:  # the served image was the trainer's
        digest = served.get("digest")
    inference_digest = inference.digest if inference else None
    if (
        inference_digest is None
        and served.get("image") == run.config["deployApproach"]["inferenceImage"]
    ):
        inference_digest = served.get("digest")
    sampler = found.sampler if found else None
    return Lineage(
        snapshot_id=run.snapshot_id,
        test_set_sha256=evaluation.get("testSetSha256"),
        training_image=image,
        training_image_digest=digest or None,
        training_backend=trained.backend if trained and trained.backend != "unknown" else None,
        training_repo_digests=list(trained.repo_digests) if trained else [],
        training_resolved_image=trained.resolved_image if trained else None,
        inference_image=run.config["deployApproach"]["inferenceImage"],
        inference_image_digest=inference_digest or None,
        model_artifact_sha256=run.model_artifact_sha256,
        package_version=package.version if package else __version__,
        package_version_recorded=package is not None,
        source_commit=package.commit if package and package.commit != "unknown" else None,
        source_dirty=package.dirty if package else None,
        trainer_python=trainer.python if trainer else None,
        trainer_libraries=[f"{k} {v}" for k, v in sorted(trainer.libraries.items())]
        if trainer
        else [],
        trainer_reported_by=trainer.reported_by if trainer else None,
        sampler=(
            f"Optuna {sampler.name}, seed {sampler.seed} (trial n: {sampler.trial_seed}), "
            f"{sampler.pruner}"
            if sampler
            else None
        ),
        best_trial=found.best_trial if found else None,
        objective=f"{objective.get('direction', 'maximize')} {objective.get('metric', '?')}",
        hyperparameters=[
            Hyperparameter(name=str(h["name"]), value=str(h["value"]))
            for h in run.hyperparameters or []
        ],
        tag_moves=[tag_move_text(m) for m in found.tag_moved] if found else [],
    )


# ----------------------------------------------------------------------------- decisions


def _approval(session: Session, run: Run, model: Model) -> ApprovalPart:
    decided = decisions_of(session, run.id)
    decisions = []
    for a in decided:
        criteria = a.criteria or {}
        override = criteria.get("override") or {}
        progress = criteria.get("approvals") or {}
        partial = None
        if progress and not progress.get("complete", True):
            partial = f"approval {len(progress.get('approvedBy') or [])} of {progress['required']}"
        decisions.append(
            Decision(
                decision=a.decision,
                by=a.user if a.actor == "user" and a.user else "the automatic approval policy",
                actor="user" if a.actor == "user" else "system",
                at=iso_time(a.decided_at),
                justification=public_text(a.description) if a.description else "none given",
                channel=a.channel,
                override=public_text(override["justification"]) if override else None,
                override_reasons=[public_text(str(r)) for r in override.get("reasons") or []],
                rollback=bool(criteria.get("rollback")),
                partial=partial,
            )
        )
    return ApprovalPart(
        status=approval_status(session, run, decided=decided),
        min_approvers=min_approvers_of(model),
        decisions=decisions,
    )
