"""OpenLineage for Patient ML's operators (docs/lineage.md).

With `apache-airflow-providers-openlineage` installed and a transport configured, Airflow's
OpenLineage listener asks each finished task for `get_openlineage_facets_on_complete`; the
operators answer with `operator_lineage(...)` of the stage's `StageLineage`
(patient_ml.services.lineage). Without the provider nothing here is imported.

A lineage failure never fails the task: the listener runs after the task's state is decided,
and `lineage_or_none` logs what went wrong and sends the event without Patient ML's facets.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.event_v2 import Dataset
    from openlineage.client.generated.base import BaseFacet
    from sqlalchemy.orm import Session

    from patient_ml.config.wire import WireModel
    from patient_ml.operators.common import PatientMLBaseOperator
    from patient_ml.services.lineage import LineageDataset, StageLineage

log = logging.getLogger("patient_ml.lineage")

F = TypeVar("F", bound="BaseFacet")


@functools.cache
def _facet_class(base: type, model_name: str, url: str) -> type[BaseFacet]:
    """An OpenLineage facet class of `base` whose `_schemaURL` is this facet's schema."""
    import attr
    from openlineage.client.generated.base import BaseFacet

    made = attr.define(type(model_name, (base,), {"_get_schema": staticmethod(lambda: url)}))
    if not issubclass(made, BaseFacet):  # never: base is an OpenLineage facet class
        raise TypeError(f"{made!r} is not an OpenLineage facet")
    return made


def _facet(base: type[F], facet: WireModel) -> F:
    from patient_ml.services.lineage_facets import schema_url

    facet_base: type = base  # a cache key (mypy takes type[BaseFacet] for unhashable)
    cls = _facet_class(facet_base, type(facet).__name__, schema_url(type(facet)))
    made = cls().with_additional_properties(**facet.to_wire())
    if not isinstance(made, base):  # never: OpenLineage copies it as a subclass of its class
        raise TypeError(f"{type(made)!r} is not a {base.__name__}")
    return made


def _dataset(dataset: LineageDataset, output: bool) -> Dataset:
    from openlineage.client.event_v2 import InputDataset, OutputDataset
    from openlineage.client.facet_v2 import dataset_version_dataset
    from openlineage.client.generated.base import DatasetFacet

    facets: dict[str, DatasetFacet] = {
        k: _facet(DatasetFacet, v) for k, v in dataset.facets.items()
    }
    if dataset.version:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=dataset.version
        )
    cls = OutputDataset if output else InputDataset
    return cls(namespace=dataset.namespace, name=dataset.name, facets=facets)


def operator_lineage(stage: StageLineage) -> OperatorLineage:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.generated.base import RunFacet

    return OperatorLineage(
        inputs=[_dataset(d, output=False) for d in stage.inputs],
        outputs=[_dataset(d, output=True) for d in stage.outputs],
        run_facets={k: _facet(RunFacet, v) for k, v in stage.run_facets.items()},
    )


def lineage_or_none(
    operator: PatientMLBaseOperator, build: Callable[[Session], StageLineage]
) -> OperatorLineage | None:
    """The stage's lineage read through the operator's product DB, or None (logged) when it
    cannot be read: the event then goes out with Airflow's own facets only."""
    from patient_ml.db.engine import session_scope

    try:
        with session_scope(operator.engine()) as session:
            return operator_lineage(build(session))
    except Exception as exc:  # lineage is a report about the task, never its outcome
        log.warning("task %s: no Patient ML lineage for this event: %s", operator.task_id, exc)
        return None
