"""The DAG factory: one Airflow DAG per stored model config (`patient_ml__<model slug>`).

The DAG file in `dags/` calls `build_dags(globals())`. A parse:

1. reads the configs with one bounded query (only the DAG a task needs when Airflow's parsing
   context names one), falling back to the last-known-good configs when the DB cannot be read;
2. takes every unchanged DAG from the build cache and builds only new or changed ones: a config
   of the same shape as one already built (`dag_shape`: same schedule, parallel trials, ...)
   gets a copy of that DAG with its own ids, texts, dates, params and Assets (`copy_dag`,
   about a quarter of the cost of Airflow's constructors). Copies are never written to the
   cache file: every parse makes them again from their shape's DAG, which costs less than
   unpickling them, so the file holds one DAG per shape (and per config that could not be
   copied);
3. puts each DAG in the module namespace; a config that cannot become a DAG is logged, warned
   about (Airflow shows parse warnings) and replaced by a stand-in DAG that shows the error, so
   it never hides the other models.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import warnings
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Unpack

from patient_ml import settings
from patient_ml.factory import build_cache
from patient_ml.factory.build import (
    FactoryArguments,
    FactoryOptions,
    build_dag,
    build_monitor_dag,
    config_error_dag,
    copy_dag,
    dag_shape,
    dag_template,
    is_monitored,
)
from patient_ml.factory.catalog import Catalog, ModelEntry, load_catalog
from patient_ml.factory.scoring import build_scoring_dag, is_scored
from patient_ml.naming import monitor_dag_id_of, scoring_dag_id_of

if TYPE_CHECKING:
    from airflow.sdk import DAG

log = logging.getLogger("patient_ml.factory")

__all__ = ["FactoryOptions", "FactoryResult", "PatientMLConfigWarning", "build_dags"]


class PatientMLConfigWarning(UserWarning):
    """A stored model config could not become a DAG, or the configs came from the cache."""


@dataclass
class FactoryResult:
    dag_ids: list[str]
    errors: dict[str, str]
    source: str
    built: int  # DAGs not taken from the build cache (built, or copied from a same-shape DAG)
    cached: int
    copied: int = 0  # of the built ones, those copied from a DAG of the same shape


def build_dags(
    namespace: MutableMapping[str, Any], **options: Unpack[FactoryArguments]
) -> FactoryResult:
    """Build the DAGs of the stored model configs into `namespace` (a DAG file's globals()).

    Keyword arguments are the fields of `FactoryOptions`.
    """
    from airflow.sdk import get_parsing_context

    arguments: FactoryArguments = {"backend": settings.backend(), **options}
    opts = FactoryOptions(**arguments)
    cache_dir = settings.dag_cache_dir()
    only = get_parsing_context().dag_id
    catalog = load_catalog(only_dag_id=only, cache_dir=cache_dir)
    _report_source(catalog)
    options_key = opts.key()
    cached = build_cache.load(cache_dir) if only is None else {}
    # key → DAG of this parse, for the build cache. Copies never go into it: making one again
    # from its shape's DAG costs less than unpickling it (benchmarks/dag_parse.py), and the
    # file stays one DAG per shape
    fresh: dict[str, Any] = {}
    errors: dict[str, str] = {}
    templates = _Templates()
    built = copied = 0
    gc_was_enabled = gc.isenabled()
    gc.disable()  # tens of thousands of small objects: no cyclic GC passes while building
    try:
        for entry in catalog.entries:
            key = build_cache.entry_key(entry.digest, options_key)
            dag = cached.get(key)
            is_copy = False
            if dag is None:
                dag = templates.copy(entry, opts)
                is_copy = dag is not None
                if dag is None:
                    dag = _build(entry, opts, errors)
                built += 1
                copied += is_copy
            if entry.dag_id not in errors:
                if not is_copy:
                    fresh[key] = dag
                templates.offer(entry, dag)
            namespace[entry.dag_id] = dag
            if is_monitored(entry) and entry.dag_id not in errors:
                _add_deployed_dag(
                    "monitor", entry, opts, options_key, cached, fresh, namespace, errors
                )
            if is_scored(entry) and entry.dag_id not in errors:
                _add_deployed_dag(
                    "scoring", entry, opts, options_key, cached, fresh, namespace, errors
                )
    finally:
        if gc_was_enabled:
            gc.enable()
    if only is None and catalog.source == "database" and fresh.keys() != cached.keys():
        build_cache.save(cache_dir, fresh)
    return FactoryResult(
        dag_ids=[e.dag_id for e in catalog.entries],
        errors=errors,
        source=catalog.source,
        built=built,
        cached=len(catalog.entries) - built,
        copied=copied,
    )


class _Templates:
    """One DAG per shape, pickled once, that the other configs of the shape are copied from.
    Shapes are worked out only once a copy is asked for (a parse where nothing changed needs
    none)."""

    def __init__(self) -> None:
        self._offered: list[tuple[ModelEntry, DAG]] = []
        self._dags: dict[tuple[Any, ...], DAG] = {}
        self._pickled: dict[tuple[Any, ...], bytes] = {}

    def offer(self, entry: ModelEntry, dag: DAG) -> None:
        self._offered.append((entry, dag))

    def copy(self, entry: ModelEntry, opts: FactoryOptions) -> DAG | None:
        for offered, dag in self._offered:
            # a value dag_shape cannot read: no template, the shape's configs are built
            with contextlib.suppress(Exception):
                self._dags.setdefault(dag_shape(offered), dag)
        self._offered.clear()
        try:
            shape = dag_shape(entry)
        except Exception:  # an unusable value: the straightforward build reports it
            return None
        template = self._pickled.get(shape)
        if template is None:
            built = self._dags.get(shape)
            if built is None:
                return None
            template = self._pickled[shape] = dag_template(built)
        try:
            return copy_dag(template, entry, opts)
        except Exception:  # e.g. a stored value of the wrong type: build_dag reports it
            return None


def _build(entry: ModelEntry, opts: FactoryOptions, errors: dict[str, str]) -> DAG:
    """`build_dag`, or the config-error stand-in (the error logged, warned and in `errors`)."""
    try:
        return build_dag(entry, opts)
    except Exception as exc:
        # the factory's own ValueErrors name the field, the value and the fix
        error = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        errors[entry.dag_id] = error
        log.error("model %r: its config cannot become a DAG: %s", entry.name, error)
        warnings.warn(
            f"Patient ML model {entry.name!r} ({entry.dag_id}): config cannot "
            f"become a DAG: {error}",
            PatientMLConfigWarning,
            stacklevel=3,
        )
        return config_error_dag(entry, error)


_DEPLOYED_DAGS = {
    "monitor": (build_monitor_dag, monitor_dag_id_of),
    "scoring": (build_scoring_dag, scoring_dag_id_of),
}


def _add_deployed_dag(
    kind: str,
    entry: ModelEntry,
    opts: FactoryOptions,
    options_key: str,
    cached: dict[str, Any],
    fresh: dict[str, Any],
    namespace: MutableMapping[str, Any],
    errors: dict[str, str],
) -> None:
    """A DAG of the model's deployed champion: its monitor DAG (`patient_ml_monitor__<slug>`)
    or its scoring DAG (`patient_ml_score__<slug>`), from the build cache or built."""
    builder, dag_id_of_slug = _DEPLOYED_DAGS[kind]
    key = build_cache.entry_key(entry.digest, f"{options_key}|{kind}")
    dag = cached.get(key)
    if dag is None:
        try:
            dag = builder(entry, opts)
        except Exception as exc:
            error = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
            errors[dag_id_of_slug(entry.slug)] = error
            log.error("model %r: its %s DAG cannot be built: %s", entry.name, kind, error)
            warnings.warn(
                f"Patient ML model {entry.name!r}: {kind} DAG cannot be built: {error}",
                PatientMLConfigWarning,
                stacklevel=3,
            )
            return
    fresh[key] = dag
    namespace[dag.dag_id] = dag


def _report_source(catalog: Catalog) -> None:
    if catalog.source == "last-known-good":
        message = (
            f"Patient ML: the product DB cannot be read ({catalog.error}); building "
            f"{len(catalog.entries)} DAG(s) from the last-known-good configs saved "
            f"{catalog.saved_at}. Fix the product DB connection; the DAGs follow it again on "
            "the next parse."
        )
    elif catalog.source == "none":
        message = (
            f"Patient ML: the product DB cannot be read ({catalog.error}) and no last-known-good "
            "configs are saved, so no model DAG is built. Fix: check PATIENT_ML_DATABASE_URL / "
            "PATIENT_ML_CONN_ID and run `patient-ml db upgrade`."
        )
    else:
        return
    log.warning(message)
    warnings.warn(message, PatientMLConfigWarning, stacklevel=3)
