"""Failure cases of a run (imgClf): the challenger's most confident errors on the test split, at
its operating point, each with saliency maps and their faithfulness (`saliency`).

Which. The decision is the run's operating point (`OperatingPoint.decide`: the threshold on the
positive label, else the most confident label). An error is a test image whose decided label is
not its confirmed label; its confidence is the (normalised) probability the model gave the
decided label. Per true label, the `per_class` errors with the highest confidence are kept: with
two labels and a positive label these are the most confident false negatives (true = positive)
and false positives (true = the other label); with more labels, per true label one-vs-rest, the
most confident misses of that label.

Maps. While the challenger is still served for its evaluation, each case's image is explained
for the *decided* label (what drove the wrong call): occlusion through `/invocations`, and the
container's own map through the optional `/explanations` route when it answers. Pictures (a
thumbnail and one overlay per map) go to the artifact store under
`runs/<run>/evaluation/failure-cases/<case>/<name>.png`, and are served only through the
authenticated API; the report and the run's evaluation summary hold ids, labels, confidences and
faithfulness, never a storage path. imgSeg runs have no failure cases (not computed).

Cost. The platform sends (1 + grid²) + steps x (maps + random orders) images per case
(8 x 8 grid, 16 steps, occlusion + Grad-CAM + 3 random orders: 145), batched 64 per request;
the section records the images, requests and seconds next to the evaluation's own seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from patient_ml.evaluation.metrics import EPS
from patient_ml.evaluation.operating_point import OperatingPoint
from patient_ml.evaluation.saliency import (
    Counter,
    Explained,
    Pixels,
    Probabilities,
    SaliencyError,
    SaliencyOptions,
    explain_image,
    overlay_png,
    own_map_of,
    seed_of,
    thumbnail_png,
)
from patient_ml.exceptions import PatientMLError
from patient_ml.storage import ArtifactStore

log = logging.getLogger("patient_ml.evaluation")

DEFAULT_PER_CLASS = 4
MAX_PER_CLASS = 16
PICTURES = ("image", "occlusion", "grad-cam")
"""The pictures a case may have (the API serves only these names)."""


def failure_cases_prefix(run_id: str) -> str:
    return f"runs/{run_id}/evaluation/failure-cases"


def picture_key(run_id: str, case: int, name: str) -> str:
    if name not in PICTURES or not case >= 0:
        raise ValueError(f"no picture {name!r} of case {case}")
    return f"{failure_cases_prefix(run_id)}/{case}/{name}.png"


@dataclass(frozen=True)
class Case:
    row: int  # position in the test set
    true_position: int  # in the label order
    decided_position: int
    confidence: float  # of the decided label
    true_confidence: float


def normalised(answers: list[list[float]] | np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(answers, dtype=np.float64), 0, None)
    if p.size == 0:
        return p.reshape(0, 0)
    return p / np.maximum(p.sum(axis=1, keepdims=True), EPS)


def decisions(
    answers: list[list[float]] | np.ndarray, indices: list[int], point: OperatingPoint | None
) -> np.ndarray:
    """The decided label position of each answer at `point` (None: the most confident)."""
    p = normalised(answers)
    if p.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    return point.decide(p, indices) if point is not None else p.argmax(axis=1)


def select(
    truths: list[int],
    answers: list[list[float]] | np.ndarray,
    indices: list[int],
    point: OperatingPoint | None,
    per_class: int,
    clusters: list[str] | None = None,
) -> dict[int, list[Case]]:
    """Per true label position: its `per_class` most confident errors at `point` (None: the
    most confident label decides), most confident first; ties by test-set order. With
    `clusters` (each example's independence cluster), at most one error per cluster and true
    label: copies of one slice make the same error, and would fill the gallery."""
    p = normalised(answers)
    out: dict[int, list[Case]] = {c: [] for c in range(len(indices))}
    if p.shape[0] == 0:
        return out
    decided = decisions(answers, indices, point)
    position = {index: k for k, index in enumerate(indices)}
    for row, truth in enumerate(truths):
        t = position[truth]
        d = int(decided[row])
        if d != t:
            out[t].append(Case(row, t, d, float(p[row, d]), float(p[row, t])))
    for t in out:
        seen: set[str] = set()
        kept = []
        for case in sorted(out[t], key=lambda c: (-c.confidence, c.row)):
            cluster = clusters[case.row] if clusters is not None else str(case.row)
            if cluster not in seen:
                seen.add(cluster)
                kept.append(case)
        out[t] = kept[:per_class]
    return out


def kind_of(case: Case, indices: list[int], point: OperatingPoint | None) -> str:
    """falseNegative / falsePositive for two labels with a positive label; else missed."""
    if point is not None and point.positive_label is not None and len(indices) == 2:
        positive = indices.index(point.positive_label.index)
        return "falseNegative" if case.true_position == positive else "falsePositive"
    return "missed"


Explainer = Callable[[bytes, int], dict[str, Any] | None]
"""The container's optional `/explanations` (image, label index) -> answer or None."""


def compute_failure_cases(
    run_id: str,
    *,
    example_ids: list[str],
    truths: list[int],
    answers: list[list[float]],
    labels: tuple[tuple[int, str], ...],
    point: OperatingPoint | None,
    read_image: Callable[[int], bytes],
    probabilities: Probabilities,
    explainer: Explainer | None,
    store: ArtifactStore,
    per_class: int = DEFAULT_PER_CLASS,
    options: SaliencyOptions | None = None,
    workers: int = 2,
    clusters: list[str] | None = None,
) -> dict[str, Any]:
    """The `failureCases` section of the evaluation report; pictures stored under
    `failure_cases_prefix(run_id)`. A case whose maps cannot be computed keeps its row with
    the reason (`mapsError`); the evaluation never fails because of a map."""
    options = options or SaliencyOptions()
    started = time.monotonic()
    indices = [index for index, _ in labels]
    names = dict(labels)
    chosen = select(truths, answers, indices, point, per_class, clusters)
    flat = [case for t in sorted(chosen) for case in chosen[t]]
    counter = Counter()
    offered: list[bool] = []  # whether the container answered /explanations (first answer)

    lock = threading.Lock()

    def own_answer(data: bytes, index: int) -> dict[str, Any] | None:
        """The container's own map; the route is asked once before it is asked in parallel,
        and never again after a 404."""
        if explainer is None:
            return None
        with lock:
            if offered == [False]:
                return None
            if not offered:
                answer = explainer(data, index)
                offered.append(answer is not None)
                return answer
        return explainer(data, index)

    def one(number: int, case: Case) -> dict[str, Any]:
        example = example_ids[case.row]
        decided = indices[case.decided_position]
        entry: dict[str, Any] = {
            "case": number,
            "exampleId": example,
            "kind": kind_of(case, indices, point),
            "trueLabel": {
                "index": indices[case.true_position],
                "name": names[indices[case.true_position]],
            },
            "predictedLabel": {"index": decided, "name": names[decided]},
            "confidence": round(case.confidence, 4),
            "trueLabelConfidence": round(case.true_confidence, 4),
            "explainedLabel": {"index": decided, "name": names[decided]},
            "maps": {},
        }
        try:
            data = read_image(case.row)
            own = own_map_of(own_answer(data, decided), decided)
            explained: Explained = explain_image(
                data,
                case.decided_position,
                probabilities,
                options=options,
                own_map=own[0] if own else None,
                own_method=own[1] if own else "grad-cam",
                seed=seed_of(f"{run_id}/{example}"),
                counter=counter,
            )
            pixels = Pixels.of(data, options.max_side)
            entry["image"] = {"width": pixels.width, "height": pixels.height}
            store.put_bytes(picture_key(run_id, number, "image"), thumbnail_png(pixels))
            entry["pictures"] = ["image"]
            for found in explained.maps:
                name = "occlusion" if found.method == "occlusion" else "grad-cam"
                store.put_bytes(
                    picture_key(run_id, number, name), overlay_png(pixels, found.display)
                )
                entry["pictures"].append(name)
                entry["maps"][name] = {
                    "method": found.method,
                    "grid": [[round(float(v), 4) for v in row] for row in found.cells],
                    "faithfulness": found.faithfulness.wire(),
                }
            entry["probability"] = round(explained.probability, 4)
        except (SaliencyError, PatientMLError) as exc:
            entry["mapsError"] = exc.message
            log.warning("failure case %d of run %s: no maps: %s", number, run_id, exc.message)
        return entry

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="failure-cases") as pool:
        cases = list(pool.map(lambda pair: one(*pair), enumerate(flat)))
    seconds = round(time.monotonic() - started, 2)
    decided = decisions(answers, indices, point)
    position = {index: k for k, index in enumerate(indices)}
    errors = dict.fromkeys(range(len(indices)), 0)
    for row, truth in enumerate(truths):
        if int(decided[row]) != position[truth]:
            errors[position[truth]] += 1
    return {
        "perClass": per_class,
        "onePerCluster": clusters is not None,
        "decidedBy": point.describe() if point is not None else "the most confident label",
        "explained": "the predicted (wrong) label",
        "classes": [
            {
                "trueLabel": {"index": indices[t], "name": names[indices[t]]},
                "errors": errors[t],
                "images": sum(1 for truth in truths if position[truth] == t),
                "shown": len(chosen[t]),
            }
            for t in range(len(indices))
        ],
        "cases": cases,
        "methods": ["occlusion"] + (["grad-cam"] if offered == [True] else []),
        "containerMap": offered == [True],
        "saliency": {
            "grid": options.grid,
            "steps": options.steps,
            "randomOrders": options.random_orders,
            "fill": "the image's mean",
            "maxSide": options.max_side,
        },
        "cost": {
            "images": counter.images,
            "requests": counter.requests,
            "seconds": seconds,
            "inferenceSeconds": round(counter.seconds, 2),
        },
    }
