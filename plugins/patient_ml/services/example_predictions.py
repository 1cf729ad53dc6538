"""The champion's newest prediction per example of its dataset (`pml_example_predictions`):
written when a labelling hint is answered, read by the examples list's "has prediction" filter
and shown on the example.

An example *has a prediction* when the model's current champion predicted the example's
current image (a later champion, or a new version of the image, needs a new prediction). Only
the prediction log's summary is kept (label and confidence, or the mask's label fractions):
the hint itself is predicted again when it is shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_ml.db.models import ExamplePrediction, Model, utcnow


@dataclass(frozen=True)
class ChampionPredictions:
    """The examples the model's current champion has predicted: example id → image version."""

    model_id: str
    run_id: str | None
    versions: dict[str, str | None] = field(default_factory=dict)

    def has(self, example_id: str, image_version: str | None) -> bool:
        return example_id in self.versions and self.versions[example_id] == image_version


def record(
    session: Session,
    *,
    model_id: str,
    example_id: str,
    run_id: str,
    image_version: str | None,
    output: dict[str, Any],
) -> None:
    """Keep this prediction as the model's newest for the example (one row per example)."""
    row = session.scalar(
        select(ExamplePrediction).where(
            ExamplePrediction.model_id == model_id, ExamplePrediction.example_id == example_id
        )
    )
    if row is None:
        row = ExamplePrediction(model_id=model_id, example_id=example_id)
        session.add(row)
    row.run_id = run_id
    row.image_version = image_version
    row.output = output
    row.created_at = utcnow()
    session.flush()


def record_many(
    session: Session,
    *,
    model_id: str,
    run_id: str,
    predictions: Sequence[tuple[str, str | None, dict[str, Any]]],
) -> None:
    """`record` for many examples at once (`(example_id, image_version, output)` each, as a
    batch-scoring chunk has them): the existing rows read in a few queries, one flush."""
    wanted = {example_id: (version, output) for example_id, version, output in predictions}
    ids = list(wanted)
    rows: dict[str, ExamplePrediction] = {}
    for start in range(0, len(ids), _IN_SLICE):
        rows.update(
            (row.example_id, row)
            for row in session.scalars(
                select(ExamplePrediction).where(
                    ExamplePrediction.model_id == model_id,
                    ExamplePrediction.example_id.in_(ids[start : start + _IN_SLICE]),
                )
            )
        )
    now = utcnow()
    for example_id, (version, output) in wanted.items():
        row = rows.get(example_id)
        if row is None:
            row = ExamplePrediction(model_id=model_id, example_id=example_id)
            session.add(row)
        row.run_id = run_id
        row.image_version = version
        row.output = output
        row.created_at = now
    session.flush()


_IN_SLICE = 500
"""Example ids per `IN (...)` of `record_many` (far below SQLite's and PostgreSQL's limits)."""


def of_champion(session: Session, model: Model) -> ChampionPredictions:
    """Which examples the model's current champion has predicted (none without a champion)."""
    if model.champion_id is None:
        return ChampionPredictions(model.id, None)
    rows = session.execute(
        select(ExamplePrediction.example_id, ExamplePrediction.image_version).where(
            ExamplePrediction.model_id == model.id,
            ExamplePrediction.run_id == model.champion_id,
        )
    )
    return ChampionPredictions(model.id, model.champion_id, {eid: ver for eid, ver in rows})


def outputs(
    session: Session, found: ChampionPredictions, example_ids: list[str]
) -> dict[str, ExamplePrediction]:
    """The stored predictions of these examples by the current champion."""
    if found.run_id is None or not example_ids:
        return {}
    rows = session.scalars(
        select(ExamplePrediction).where(
            ExamplePrediction.model_id == found.model_id,
            ExamplePrediction.run_id == found.run_id,
            ExamplePrediction.example_id.in_(example_ids),
        )
    )
    return {row.example_id: row for row in rows}
