"""What the operators share: the product DB engine, the artifact store, the run's end on a
task's last failed try."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("patient_ml.operators")


def product_engine(conn_id: str | None) -> Any:
    from patient_ml.hooks.product_db import product_engine as engine_of

    return engine_of(conn_id)


def artifact_store(artifact_uri: str | None, aws_conn_id: str) -> Any:
    from patient_ml import settings
    from patient_ml.storage import artifact_store_from_uri

    return artifact_store_from_uri(artifact_uri or settings.artifact_uri(), aws_conn_id=aws_conn_id)


def is_last_try(context: Any, retries: int) -> bool:
    ti = context.get("ti") if hasattr(context, "get") else None
    try_number = getattr(ti, "try_number", None)
    return try_number is None or int(try_number) > int(retries or 0)


def fail_run_on_last_try(
    context: Any, retries: int, conn_id: str | None, run_id: str, error: str, actor: str
) -> None:
    """Mark the run failed with `error` when Airflow will not retry this task any more."""
    if not is_last_try(context, retries):
        log.warning("run %s: this try failed; Airflow will retry the task", run_id)
        return
    from patient_ml.db.engine import session_scope
    from patient_ml.services.runs import finish_run, get_run

    with session_scope(product_engine(conn_id)) as session:
        if get_run(session, run_id).status == "running":
            finish_run(session, run_id, status="failed", actor=actor, error=error[:4000])
