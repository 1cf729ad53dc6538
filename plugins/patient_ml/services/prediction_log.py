"""The prediction log: one row per prediction served through the product (REST predictions,
`patient-ml models predict`, both through `services.predictions.predict`).

A row holds the model, the run that answered, the time, the image's sha256 and cheap statistics
(`patient_ml.monitoring.image_stats`, with the texture descriptor of
`patient_ml.monitoring.features`) and the output (imgClf: predicted label, its confidence
and every label's confidence; imgSeg: the fraction of pixels per label), and the subgroup
attributes the model's `monitoring.subgroups` names (site, manufacturer: never sex or age
unless named there). No image bytes, no example or patient identifier.

Growth is bounded per model by `monitoring.retentionDays` and `monitoring.maxLogRows`: the
monitor DAG prunes on each check, and every PRUNE_EVERY-th row written prunes its model too
(so a model whose monitor DAG is paused still stays bounded).
"""

from __future__ import annotations

import base64
import io
from datetime import timedelta
from typing import Any, cast

import numpy as np
from PIL import Image
from sqlalchemy import CursorResult, Delete, delete, func, select
from sqlalchemy.orm import Session

from patient_ml.db.models import Model, PredictionRecord, utcnow
from patient_ml.monitoring.image_stats import STATISTICS

PRUNE_EVERY = 200
DEFAULT_RETENTION_DAYS = 90.0
DEFAULT_MAX_ROWS = 100_000


def output_summary(problem_type: str, answer: dict[str, Any]) -> dict[str, Any]:
    """What the log keeps of a prediction answer (`services.predictions.predict`'s result)."""
    if problem_type == "imgSeg":
        return {"fractions": mask_fractions(answer.get("mask"))}
    predictions = answer.get("predictions") or []
    top = predictions[0] if predictions else {}  # the most confident label (as the reference
    # profile of monitoring counts them); `decided`: the label at the operating point
    chosen = [p["index"] for p in predictions if p.get("value")]
    return {
        "label": top.get("index"),
        "confidence": top.get("confidence"),
        "confidences": {str(p["index"]): round(float(p["confidence"]), 6) for p in predictions},
        **({"decided": chosen[0]} if chosen else {}),
    }


def mask_fractions(mask_b64: str | None) -> dict[str, float]:
    if not mask_b64:
        return {}
    try:
        mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(mask_b64))))
    except Exception:
        return {}
    values, counts = np.unique(mask, return_counts=True)
    return {str(int(v)): round(float(c) / mask.size, 6) for v, c in zip(values, counts,
                                                                        strict=True)}  # fmt: skip


def record_prediction(
    session: Session,
    *,
    model_id: str,
    run_id: str,
    statistics: dict[str, Any],
    output: dict[str, Any],
    latency_ms: float | None = None,
    attributes: dict[str, str] | None = None,
) -> PredictionRecord:
    row = PredictionRecord(
        model_id=model_id,
        run_id=run_id,
        image_sha256=statistics["sha256"],
        width=statistics.get("width"),
        height=statistics.get("height"),
        statistics={
            **{k: statistics.get(k) for k in STATISTICS},
            **({"features": statistics["features"]} if statistics.get("features") else {}),
        },
        output=output,
        latency_ms=None if latency_ms is None else round(latency_ms, 3),
        attributes=attributes or None,
    )
    session.add(row)
    session.flush()
    if row.id % PRUNE_EVERY == 0:
        model = session.get(Model, model_id)
        prune(session, model_id, (model.monitoring or {}) if model else {})
    return row


def _delete(session: Session, statement: Delete) -> int:
    """Run a DELETE; how many rows it removed."""
    result: CursorResult[Any] = cast("CursorResult[Any]", session.execute(statement))
    return result.rowcount


def prune(session: Session, model_id: str, monitoring: dict[str, Any]) -> int:
    """Delete the model's rows older than retentionDays and beyond maxLogRows; how many."""
    days = float(monitoring.get("retentionDays") or DEFAULT_RETENTION_DAYS)
    max_rows = int(monitoring.get("maxLogRows") or DEFAULT_MAX_ROWS)
    table = PredictionRecord
    deleted = _delete(
        session,
        delete(table).where(
            table.model_id == model_id, table.created_at < utcnow() - timedelta(days=days)
        ),
    )
    count = session.scalar(select(func.count()).where(table.model_id == model_id)) or 0
    if count > max_rows:
        cutoff = session.scalar(
            select(table.id)
            .where(table.model_id == model_id)
            .order_by(table.id.desc())
            .offset(max_rows - 1)
            .limit(1)
        )
        deleted += _delete(
            session, delete(table).where(table.model_id == model_id, table.id < cutoff)
        )
    return int(deleted or 0)


def window(
    session: Session, model_id: str, *, hours: float, size: int, run_id: str | None = None
) -> list[PredictionRecord]:
    """The newest `size` predictions of the last `hours` (of `run_id` when given), oldest
    first."""
    query = select(PredictionRecord).where(
        PredictionRecord.model_id == model_id,
        PredictionRecord.created_at >= utcnow() - timedelta(hours=hours),
    )
    if run_id is not None:
        query = query.where(PredictionRecord.run_id == run_id)
    rows = list(session.scalars(query.order_by(PredictionRecord.id.desc()).limit(size)))
    rows.reverse()
    return rows
