"""The model card of a run (JSON and Markdown, in the artifact store next to the run):
intended use, data (snapshot and counts per split), training image and digest,
hyperparameters, test metrics of challenger and champion with their 95 % intervals (clusters
resampled) and paired differences, decisions and deployment. Rewritten after evaluation,
decision and deployment, so it is always current.

This module renders a card and names its objects; `patient_ml.services.model_cards` builds it
from the product DB and writes it."""

from __future__ import annotations

from typing import Any

from patient_ml.config.platform_metrics import PLATFORM_METRICS, plain_name


def headline_metrics(problem_type: str) -> list[str]:
    """The platform's metrics of a problem type, in their documented order."""
    return [m.name for m in PLATFORM_METRICS.values() if m.problem_type == problem_type]


def card_keys(run_id: str) -> tuple[str, str]:
    return f"runs/{run_id}/model-card.json", f"runs/{run_id}/model-card.md"


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _with_interval(value: Any, interval: Any, signed: bool = False) -> str:
    """`0.9120 [0.8800, 0.9390]` (a difference: `+0.0120 [-0.0100, +0.0350]`)."""
    if value is None:
        return "—"
    number = (lambda v: f"{v:+.4f}") if signed else (lambda v: f"{v:.4f}")
    text = number(value)
    if interval and interval[0] is not None and interval[1] is not None:
        text += f" [{number(interval[0])}, {number(interval[1])}]"
    return text


def _test_set_line(ev: dict[str, Any]) -> str:
    images, clusters = ev.get("testImages"), ev.get("testClusters")
    if images is None:
        return ""
    text = f"Test set: {images} images"
    if clusters is not None:
        text += (
            f" · {clusters} independent clusters (a patient, or a group of copies of one "
            "image where larger); 95 % intervals resample the clusters, and differences are "
            "paired (both models on the same resamples)"
        )
    left_out = ev.get("testImagesLeftOut") or 0
    if left_out:
        text += f". {left_out} test images left out: a copy is in train"
    return text + "."


def render_markdown(card: dict[str, Any]) -> str:
    model, run, data, ev = card["model"], card["run"], card["data"], card["evaluation"]
    lines = [
        f"# Model card: {model['name']} — run {run['slug']}",
        "",
        f"Run `{run['id']}` (status {run['status']}, triggered by {run['triggeredBy']}).",
        "",
        "## Intended use",
        card["intendedUse"],
        "",
        "## Data",
        f"- Problem: {card['problem']['problemType']}, labels: "
        + ", ".join(f"{x['name']} ({x['index']})" for x in card["problem"]["labels"]),
        f"- Snapshot: `{data['snapshotId']}`",
        f"- Examples per split: {data['examplesBySplit']}",
        f"- Patients per split: {data['patientsBySplit']}",
        f"- Test examples scored: {data['testExamplesScored']} "
        f"(ids sha256 `{(data['testSetSha256'] or '')[:16]}`)",
        "",
        "## Training",
        f"- Image: `{card['training']['image']}`; served for evaluation as "
        f"{card['training']['servedWith']}",
        f"- Objective: {card['training']['objective']}",
        f"- Hyperparameters: {card['training']['hyperparameters']}",
        f"- Model artifact: `{card['training']['modelArtifactUri']}` "
        f"(sha256 `{(card['training']['modelArtifactSha256'] or '')[:16]}`)",
        "",
        "## Test metrics (computed by the platform)",
    ]
    if ev["note"]:
        lines += [ev["note"], ""]
    if _test_set_line(ev):
        lines += [_test_set_line(ev), ""]
    names = [n for n in headline_metrics(card["problem"]["problemType"]) if n in ev["challenger"]]
    names += sorted(n for n in ev["challenger"] if n not in names)
    intervals = ev.get("intervals") or {}
    mine, theirs = intervals.get("challenger") or {}, intervals.get("champion") or {}
    lines += [
        "| Metric | Challenger [95 % interval] | Champion [95 % interval] | "
        "Difference (challenger - champion) [95 % interval] |",
        "|---|---|---|---|",
    ]
    for name in names:
        delta = ev["deltas"].get(name, {})
        ours = _with_interval(ev["challenger"].get(name), mine.get(name))
        lines.append(
            f"| {plain_name(name)} | {ours} | "
            f"{_with_interval((ev['champion'] or {}).get(name), theirs.get(name))} | "
            f"{_with_interval(delta.get('delta'), (delta.get('low'), delta.get('high')), True)}"
            f"{' ✓' if delta.get('improved') else ''} |"
        )
    approval = card["approval"]
    lines += ["", "## Approval", f"Status: {approval['status']}."]
    for d in approval["decisions"]:
        lines.append(
            f"- {d['decision']} by {d.get('user') or d['actor']}: {d.get('description', '')}"
        )
    dep = card["deployment"]
    lines += [
        "",
        "## Deployment",
        f"Type {dep['type']}, status {dep['status'] or 'not deployed'}"
        + (f" ({dep['error']})" if dep["error"] else "")
        + (", current champion." if dep["isChampion"] else "."),
        "",
    ]
    return "\n".join(lines)
