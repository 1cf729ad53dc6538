"""The model card of a run, as a document a person reads: intended use and users, data
provenance, population, performance with intervals at the operating point, failure gallery,
calibration, limitations (declared and derived), lineage, and the decisions with their
justifications. Dates are ISO dates and times in UTC; no server paths; nothing `null` (a value
that is not known is left out of the JSON and shown as "not recorded").

This module holds the card's typed read model (`ModelCardDocument`) and renders it as
Markdown; `patient_ml.services.model_cards` assembles it from the product DB and writes it to
the artifact store next to the run (`runs/<run>/model-card.md`; the machine-readable
`model-card.json` keeps the flat format it always had)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field

from patient_ml.config.platform_metrics import PLATFORM_METRICS
from patient_ml.config.wire import WireModel

DOCUMENT_FORMAT: Literal["patient-ml-model-card-document/1"] = "patient-ml-model-card-document/1"
NOT_RECORDED = "not recorded"


def headline_metrics(problem_type: str) -> list[str]:
    """The platform's metrics of a problem type, in their documented order."""
    return [m.name for m in PLATFORM_METRICS.values() if m.problem_type == problem_type]


def card_keys(run_id: str) -> tuple[str, str]:
    return f"runs/{run_id}/model-card.json", f"runs/{run_id}/model-card.md"


# ----------------------------------------------------------------------------- public text

_FILE_URI = re.compile(r"file://\S*", re.IGNORECASE)
# An absolute POSIX path of two or more segments (/opt/ml/model, /home/x/data.ndjson) or a
# Windows drive path, not preceded by a word character (so "and/or", "1/2" stay).
_LOCAL_PATH = re.compile(r"(?<![\w:/.])(?:/[\w.@+-]+){2,}/?|\b[A-Za-z]:\\[^\s]+")
PATH_REMOVED = "[path removed]"


def public_text(text: str) -> str:
    """`text` without file:// URIs or local file paths (a card is shared outside the server)."""
    return _LOCAL_PATH.sub(PATH_REMOVED, _FILE_URI.sub(PATH_REMOVED, text))


def iso_time(moment: datetime) -> str:
    """`2026-12-06T18:52:31Z`: an ISO 8601 time in UTC, to the second."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _shown_time(iso: str) -> str:
    """`2026-12-06 18:52 UTC` from `iso_time`'s text."""
    return f"{iso[:10]} {iso[11:16]} UTC" if len(iso) >= 16 else iso


# ----------------------------------------------------------------------------- read model


class CardPart(WireModel):
    """Base of the card's parts: the wire conventions of `WireModel` (camelCase, nothing
    unknown, no nulls sent by `to_wire`), immutable, strings kept exactly as written."""

    model_config = ConfigDict(frozen=True, str_strip_whitespace=False)


class CardModelRef(CardPart):
    id: str
    name: str
    revision: int = Field(description="The model config's revision the run was made from.")


class CardRun(CardPart):
    id: str
    slug: str
    status: str
    triggered_by: str
    started: str = Field(description="ISO 8601 time in UTC.")
    ended: str | None = Field(None, description="ISO 8601 time in UTC; left out while running.")


class CardLabel(CardPart):
    index: int
    name: str
    description: str | None = None


class CardProblem(CardPart):
    problem_type: Literal["imgClf", "imgSeg"]
    title: str = Field(description="The problem type in words.")
    labels: list[CardLabel]


class IntendedUse(CardPart):
    summary: str
    declared: bool = Field(
        description="Whether the model config declares its use (`modelCard`); false: the "
        "summary is the model's description."
    )
    intended_users: list[str] = Field(default_factory=list)
    out_of_scope: list[str] = Field(default_factory=list)


class FhirSource(CardPart):
    kind: Literal["fhirServer", "ndjson"]
    name: str = Field(description="The source by name (connection or folder), never a path.")


class SplitCounts(CardPart):
    split: str
    images: int
    patients: int | None = None
    clusters: int | None = Field(
        None, description="Independent clusters (a patient, or copies of one image joined)."
    )


class Provenance(CardPart):
    dataset_name: str
    fhir_source: FhirSource
    inclusion_codes: list[str] = Field(
        description="FHIR codes of DocumentReference.type that put an image in the dataset."
    )
    snapshot_id: str | None = None
    snapshot_created: str | None = Field(None, description="ISO 8601 time in UTC.")
    records_read: int | None = None
    quarantined: int | None = Field(None, description="Records or images left out by curation.")
    splits: list[SplitCounts] = Field(default_factory=list)
    near_duplicate_groups: int | None = None
    test_images_with_copy_in_train: int | None = None


class Prevalence(CardPart):
    split: str
    label: str
    images: int
    share: float = Field(description="Share of the split's labelled images.")


class Estimate(CardPart):
    value: float
    low: float | None = Field(None, description="Lower end of the 95 % interval.")
    high: float | None = None


class MetricRow(CardPart):
    name: str
    title: str = Field(description="The metric in plain words.")
    direction: Literal["maximize", "minimize"]
    challenger: Estimate | None = None
    champion: Estimate | None = None
    difference: Estimate | None = Field(
        None, description="challenger - champion, with the paired interval."
    )
    verdict: Literal["better", "worse", "shownBetter", "shownWorse", "same"] | None = Field(
        None,
        description="The challenger against the champion: shown* when the interval of the "
        "difference leaves 0 out.",
    )


class LabelShare(CardPart):
    label: str
    share: float


class Subgroup(CardPart):
    name: str
    images: int | None = None
    clusters: int | None = None
    small: bool = Field(False, description="Fewer independent clusters than the evaluation asks.")
    prevalence: list[LabelShare] = Field(
        default_factory=list, description="Share of each label among its labelled test images."
    )
    metrics: list[MetricRow] = Field(
        default_factory=list,
        description="The headline metrics and those at the operating point per label.",
    )


class Population(CardPart):
    prevalence: list[Prevalence] = Field(default_factory=list)
    subgroups_recorded: bool
    subgroups: list[Subgroup] = Field(default_factory=list)
    note: str


class CardOperatingPoint(CardPart):
    rule: str
    description: str
    positive_label: str | None = None
    threshold: float | None = None
    target: float | None = None
    validation_sensitivity: float | None = None
    validation_specificity: float | None = None


class Performance(CardPart):
    evaluated: bool
    note: str | None = None
    test_images: int | None = None
    test_clusters: int | None = None
    test_images_left_out: int = 0
    intervals: str | None = Field(None, description="How the 95 % intervals were made.")
    champion_run: str | None = Field(
        None, description="The champion compared with: its slug and (id)."
    )
    labels_changed: bool = False
    metrics: list[MetricRow] = Field(default_factory=list)
    operating_point: CardOperatingPoint | None = None


class MapLink(CardPart):
    name: str
    url: str = Field(
        description="An http(s) URL, or a path of the Patient ML API (`/models/...`, under "
        "/v1/patient-ml) that serves the picture to the same readers."
    )


class FailureCase(CardPart):
    example_id: str
    true_label: str
    predicted_label: str
    confidence: float | None = None
    maps: list[MapLink] = Field(default_factory=list)
    maps_error: str | None = Field(None, description="Why the maps could not be made.")


class FailureClass(CardPart):
    label: str = Field(description="The true label.")
    errors: int | None = Field(None, description="Test images of the label answered wrongly.")
    images: int | None = Field(None, description="Test images of the label.")
    cases: list[FailureCase]


class FailureGallery(CardPart):
    recorded: bool
    classes: list[FailureClass] = Field(default_factory=list)
    note: str


class ReliabilityBin(CardPart):
    confidence: float
    accuracy: float
    count: int


class Calibration(CardPart):
    recorded: bool
    challenger_error: Estimate | None = Field(
        None, description="Expected calibration error (10 bins)."
    )
    champion_error: Estimate | None = None
    bins: list[ReliabilityBin] = Field(default_factory=list)
    note: str


class Limitation(CardPart):
    text: str
    source: Literal["declared", "derived"]


class Hyperparameter(CardPart):
    name: str
    value: str


class Lineage(CardPart):
    snapshot_id: str | None = None
    test_set_sha256: str | None = None
    training_image: str
    training_image_digest: str | None = None
    training_backend: str | None = Field(None, description="docker, local or sagemaker.")
    training_repo_digests: list[str] = Field(default_factory=list)
    training_resolved_image: str | None = Field(None, description="SageMaker's resolved image.")
    inference_image: str
    inference_image_digest: str | None = None
    model_artifact_sha256: str | None = None
    package_version: str
    package_version_recorded: bool = Field(
        True, description="False: the run recorded none; the version shown is the current one."
    )
    source_commit: str | None = None
    source_dirty: bool | None = Field(
        None, description="True: the package's source had uncommitted changes."
    )
    trainer_python: str | None = None
    trainer_libraries: list[str] = Field(
        default_factory=list, description="`name version` of the trainer's key libraries."
    )
    trainer_reported_by: str | None = Field(
        None, description="trainer (its environment.json) or host (the local interpreter)."
    )
    sampler: str | None = Field(None, description="The Optuna sampler and its seed.")
    best_trial: int | None = None
    objective: str
    hyperparameters: list[Hyperparameter] = Field(default_factory=list)
    tag_moves: list[str] = Field(
        default_factory=list,
        description="Image tags that named another image in an earlier run of the model.",
    )


def trainer_text(lin: Lineage) -> str:
    """`Python 3.11.2; torch 2.3.0, numpy 1.26.4 (reported by the trainer)`."""
    if not lin.trainer_python and not lin.trainer_libraries:
        return NOT_RECORDED
    parts = [f"Python {lin.trainer_python}" if lin.trainer_python else "Python not recorded"]
    if lin.trainer_libraries:
        parts.append(", ".join(lin.trainer_libraries))
    who = {"trainer": "reported by the trainer", "host": "the local backend's interpreter"}
    suffix = f" ({who[lin.trainer_reported_by]})" if lin.trainer_reported_by in who else ""
    return "; ".join(parts) + suffix


def source_commit_text(lin: Lineage) -> str:
    if not lin.source_commit:
        return NOT_RECORDED
    if lin.source_dirty:
        return f"{lin.source_commit} (with uncommitted changes)"
    return lin.source_commit


class Decision(CardPart):
    decision: str
    by: str
    actor: Literal["user", "system"]
    at: str = Field(description="ISO 8601 time in UTC.")
    justification: str
    channel: str | None = None
    override: str | None = Field(None, description="The override's own justification.")
    override_reasons: list[str] = Field(default_factory=list)
    rollback: bool = False
    partial: str | None = Field(None, description="e.g. 'approval 1 of 2' (two-person rule).")


class ApprovalPart(CardPart):
    status: str
    min_approvers: int
    decisions: list[Decision] = Field(default_factory=list)


class DeploymentPart(CardPart):
    type: str
    status: str
    error: str | None = None
    is_champion: bool


class ModelCardDocument(CardPart):
    """A run's model card as a document (GET .../model-card/document; Markdown at
    .../model-card/markdown)."""

    format: Literal["patient-ml-model-card-document/1"] = DOCUMENT_FORMAT
    title: str
    generated_at: str = Field(description="ISO 8601 time in UTC.")
    model: CardModelRef
    run: CardRun
    problem: CardProblem
    intended_use: IntendedUse
    provenance: Provenance
    population: Population
    performance: Performance
    failure_gallery: FailureGallery
    calibration: Calibration
    limitations: list[Limitation]
    lineage: Lineage
    approval: ApprovalPart
    deployment: DeploymentPart

    def wire(self) -> dict[str, Any]:
        """The JSON of the card: camelCase, with unknown values left out (never null)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# ----------------------------------------------------------------------------- Markdown


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return NOT_RECORDED
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def estimate_text(estimate: Estimate | None, signed: bool = False) -> str:
    """`0.912 [0.880, 0.939]`; a difference `+0.012 [-0.010, +0.035]`; none: "—"."""
    if estimate is None:
        return "—"
    text = _num(estimate.value, signed)
    if estimate.low is not None and estimate.high is not None:
        text += f" [{_num(estimate.low, signed)}, {_num(estimate.high, signed)}]"
    return text


VERDICT_WORDS = {
    "better": "better (interval includes 0)",
    "worse": "worse (interval includes 0)",
    "shownBetter": "better ✓",
    "shownWorse": "worse ✗",
    "same": "same",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _items(values: list[str], empty: str) -> list[str]:
    return [f"- {v}" for v in values] if values else [f"- {empty}"]


def _metric_table(rows: list[MetricRow], with_champion: bool) -> list[str]:
    if with_champion:
        lines = [
            "| Metric | Challenger [95 % interval] | Champion [95 % interval] | "
            "Difference (challenger - champion) [95 % interval] | Verdict |",
            "|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {_cell(r.title)} | {estimate_text(r.challenger)} | "
                f"{estimate_text(r.champion)} | {estimate_text(r.difference, True)} | "
                f"{VERDICT_WORDS.get(r.verdict or '', '—')} |"
            )
        return lines
    lines = ["| Metric | Value [95 % interval] |", "|---|---|"]
    lines += [f"| {_cell(r.title)} | {estimate_text(r.challenger)} |" for r in rows]
    return lines


def _map_text(link: MapLink) -> str:
    """An http(s) map as a link; a picture the API serves by its name (the gallery's note
    says where)."""
    return f"[{link.name}]({link.url})" if link.url.startswith("http") else link.name


def render_markdown(card: ModelCardDocument) -> str:
    """The card as a Markdown document (what `runs card` prints and the download holds)."""
    run, use, prov, pop = card.run, card.intended_use, card.provenance, card.population
    perf, lin = card.performance, card.lineage
    lines = [
        f"# {card.title}",
        "",
        f"Model **{card.model.name}** (config revision {card.model.revision}), run "
        f"**{run.slug}** (`{run.id}`): {run.status}, triggered by {run.triggered_by}, started "
        f"{_shown_time(run.started)}"
        + (f", ended {_shown_time(run.ended)}" if run.ended else ", not ended")
        + f". Card generated {_shown_time(card.generated_at)}.",
        "",
        "## Intended use",
        "",
        use.summary,
        "",
    ]
    if not use.declared:
        lines += [
            "_The model config declares no intended use (`modelCard`); shown: its description._",
            "",
        ]
    lines += ["**Intended users**", "", *_items(use.intended_users, NOT_RECORDED), ""]
    lines += ["**Out of scope**", "", *_items(use.out_of_scope, NOT_RECORDED), ""]
    lines += [
        "## Problem",
        "",
        f"{card.problem.title}; labels: "
        + ", ".join(f"{x.name} (index {x.index})" for x in card.problem.labels)
        + ".",
        "",
        "## Data provenance",
        "",
        f"- Dataset: {prov.dataset_name}",
        f"- FHIR source: {prov.fhir_source.name}",
        "- Inclusion codes (DocumentReference.type): "
        + (", ".join(f"`{c}`" for c in prov.inclusion_codes) or NOT_RECORDED),
        f"- Snapshot: `{prov.snapshot_id or NOT_RECORDED}`"
        + (f", curated {_shown_time(prov.snapshot_created)}" if prov.snapshot_created else ""),
    ]
    if prov.records_read is not None:
        lines.append(f"- FHIR records read: {prov.records_read}")
    if prov.quarantined is not None:
        lines.append(f"- Left out by curation (quarantined or excluded): {prov.quarantined}")
    if prov.near_duplicate_groups is not None:
        lines.append(
            f"- Groups of near-duplicate images (kept in one split): {prov.near_duplicate_groups}"
        )
    if prov.test_images_with_copy_in_train:
        lines.append(f"- Test images with a copy in train: {prov.test_images_with_copy_in_train}")
    lines.append("")
    if prov.splits:
        lines += ["| Split | Images | Patients | Independent clusters |", "|---|---|---|---|"]
        for s in prov.splits:
            lines.append(
                f"| {s.split} | {s.images} | {NOT_RECORDED if s.patients is None else s.patients}"
                f" | {NOT_RECORDED if s.clusters is None else s.clusters} |"
            )
        lines.append("")
    else:
        lines += ["Counts per split: not recorded.", ""]
    lines += ["## Population", ""]
    if pop.prevalence:
        lines += [
            "Label prevalence (confirmed labels) per split:",
            "",
            "| Split | Label | Images | Share |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {p.split} | {_cell(p.label)} | {p.images} | {p.share:.1%} |" for p in pop.prevalence
        ]
        lines.append("")
    else:
        lines += ["Label prevalence per split: not recorded.", ""]
    lines += [pop.note, ""]
    for group in pop.subgroups:
        size = ", ".join(
            part
            for part in (
                f"{group.images} images" if group.images is not None else "",
                f"{group.clusters} clusters" if group.clusters is not None else "",
                "small: read with care" if group.small else "",
            )
            if part
        )
        lines += [f"### Subgroup {group.name}" + (f" ({size})" if size else ""), ""]
        if group.prevalence:
            shares = ", ".join(f"{p.label} {p.share:.1%}" for p in group.prevalence)
            lines += [f"Prevalence: {shares}.", ""]
        lines += (
            _metric_table(group.metrics, with_champion=True)
            if group.metrics
            else ["No metrics recorded for this subgroup."]
        )
        lines.append("")
    lines += ["## Performance on the held-out test set", ""]
    if not perf.evaluated:
        lines += ["Not evaluated yet.", ""]
    else:
        if perf.note:
            lines += [perf.note, ""]
        text = f"Test set: {perf.test_images} images"
        if perf.test_clusters is not None:
            text += (
                f" · {perf.test_clusters} independent clusters (a patient, or a group of "
                "copies of one image where larger)"
            )
        if perf.test_images_left_out:
            text += f". {perf.test_images_left_out} test images left out: a copy is in train"
        lines += [text + ".", ""]
        if perf.intervals:
            lines += [f"Intervals: {perf.intervals}.", ""]
        if perf.champion_run:
            lines += [
                f"Compared with the champion, run {perf.champion_run}, on exactly the "
                "same test images"
                + (" (the label set changed since)" if perf.labels_changed else "")
                + ".",
                "",
            ]
        if perf.operating_point is not None:
            lines += [f"Operating point: {perf.operating_point.description}.", ""]
        lines += _metric_table(perf.metrics, with_champion=perf.champion_run is not None)
        lines.append("")
    gallery = card.failure_gallery
    lines += ["## Failure gallery", ""]
    lines += [gallery.note, ""]
    for failures in gallery.classes:
        counted = (
            f" ({failures.errors} of {failures.images} test images answered wrongly)"
            if failures.errors is not None and failures.images is not None
            else ""
        )
        lines += [f"### True label {failures.label}{counted}", ""]
        if not failures.cases:
            lines += ["No case of this label kept.", ""]
            continue
        lines += ["| Example | True | Predicted | Confidence | Maps |", "|---|---|---|---|---|"]
        for case in failures.cases:
            maps = ", ".join(_map_text(m) for m in case.maps) or (
                f"none ({case.maps_error})" if case.maps_error else "—"
            )
            lines.append(
                f"| `{case.example_id}` | {_cell(case.true_label)} | "
                f"{_cell(case.predicted_label)} | {_num(case.confidence)} | {maps} |"
            )
        lines.append("")
    cal = card.calibration
    lines += ["## Calibration", "", cal.note, ""]
    if cal.challenger_error is not None:
        lines.append(
            f"- Expected calibration error, challenger: {estimate_text(cal.challenger_error)}"
        )
    if cal.champion_error is not None:
        lines.append(f"- Expected calibration error, champion: {estimate_text(cal.champion_error)}")
    if cal.bins:
        lines += ["", "| Mean confidence | Accuracy | Images |", "|---|---|---|"]
        lines += [f"| {b.confidence:.3f} | {b.accuracy:.3f} | {b.count} |" for b in cal.bins]
    lines += ["", "## Limitations and known failure modes", ""]
    for item in card.limitations:
        mark = "" if item.source == "declared" else " _(derived from this run)_"
        lines.append(f"- {item.text}{mark}")
    if not card.limitations:
        lines.append("- No limitation declared or derived.")
    lines += [
        "",
        "## Lineage",
        "",
        f"- Snapshot: `{lin.snapshot_id or NOT_RECORDED}`",
        f"- Test set (sha256 of its example ids): `{lin.test_set_sha256 or NOT_RECORDED}`",
        f"- Training image: `{lin.training_image}`, digest "
        + (f"`{lin.training_image_digest}`" if lin.training_image_digest else NOT_RECORDED)
        + (f" ({lin.training_backend})" if lin.training_backend else ""),
        *(
            [f"- Training image repository digests: {', '.join(f'`{d}`' for d in repo)}"]
            if (repo := lin.training_repo_digests)
            else []
        ),
        *(
            [f"- SageMaker resolved training image: `{lin.training_resolved_image}`"]
            if lin.training_resolved_image
            else []
        ),
        f"- Inference image: `{lin.inference_image}`, digest "
        + (f"`{lin.inference_image_digest}`" if lin.inference_image_digest else NOT_RECORDED),
        *[f"- **Image tag moved:** {text}" for text in lin.tag_moves],
        f"- Model artifact sha256: `{lin.model_artifact_sha256 or NOT_RECORDED}`",
        f"- Objective: {lin.objective}",
        "- Hyperparameters: "
        + (", ".join(f"{h.name} = {h.value}" for h in lin.hyperparameters) or NOT_RECORDED)
        + (f" (trial {lin.best_trial})" if lin.best_trial is not None else ""),
        f"- Tuning sampler: {lin.sampler or NOT_RECORDED}",
        f"- Trainer: {trainer_text(lin)}",
        f"- Patient ML package version: {lin.package_version}"
        + ("" if lin.package_version_recorded else " (current; the run recorded none)"),
        f"- Source commit: {source_commit_text(lin)}",
        "",
        "## Decisions",
        "",
        f"Approval status: {card.approval.status} (approvals required: "
        f"{card.approval.min_approvers}).",
        "",
    ]
    for d in card.approval.decisions:
        extra = [
            x
            for x in (
                d.partial,
                "rollback" if d.rollback else "",
                f"via {d.channel}" if d.channel else "",
            )
            if x
        ]
        lines.append(
            f"- {_shown_time(d.at)} — {d.decision} by {d.by}: {d.justification}"
            + (f" ({', '.join(extra)})" if extra else "")
        )
        if d.override:
            lines.append(f"  - **Override**: {d.override}")
            lines += [f"    - {reason}" for reason in d.override_reasons]
    if not card.approval.decisions:
        lines.append("- No decision yet.")
    dep = card.deployment
    lines += [
        "",
        "## Deployment",
        "",
        f"{dep.type.capitalize()} deployment: {dep.status}"
        + (f" ({dep.error})" if dep.error else "")
        + ("; this run is the current champion." if dep.is_champion else "."),
        "",
    ]
    return "\n".join(lines)
