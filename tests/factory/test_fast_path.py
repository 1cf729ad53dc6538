"""The factory's fast path (issue 35): a config's training DAG copied from another config's DAG
of the same shape (`copy_dag`) is the DAG `build_dag` builds for it — the same DAG as Airflow
serializes it (DagSerialization.to_dict), and the same Python object graph (attributes,
containers and which objects are shared), for the example configs, varied stored configs and
every single-value change of a config that keeps its shape."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import enum
import os
import types
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from airflow.serialization.serialized_objects import DagSerialization
from sqlalchemy import Engine

from patient_ml.db.engine import session_scope
from patient_ml.factory import build_cache, build_dags
from patient_ml.factory.build import (
    FactoryOptions,
    build_dag,
    copy_dag,
    dag_shape,
    dag_template,
)
from patient_ml.factory.build_cache import BUILD_CACHE
from patient_ml.factory.catalog import ModelEntry, query_entries
from patient_ml.services.models import create_model
from tests.factory.test_factory import _load, stored  # noqa: F401  (the fixture)

OPTIONS = FactoryOptions(backend="local")


def _varied_docs() -> Iterator[dict[str, Any]]:
    """Stored configs that share a shape with the examples but change every variant value
    (name, description, maxTrials, dataset, deploy type, creation time), and some that do not."""
    brain, nuclei = _load("brain_mri_model"), _load("nuclei_model")
    for i, (max_trials, parallel) in enumerate([(1, 1), (30, 2), (8, 2), (12, 4)]):
        doc = copy.deepcopy(brain)
        doc["name"] = f"brain-variant-{i}"
        doc["description"] = f"Variant {i}\nsecond line" if i % 2 else ""
        doc["trainingApproach"]["maxTrials"] = max_trials
        doc["trainingApproach"]["parallelTrials"] = parallel
        if i == 2:
            doc["deployApproach"]["type"] = "edge"
        yield doc
    for i, schedule in enumerate([None, "0 4 * * *", "0 4 * * *", "@weekly"]):
        doc = copy.deepcopy(nuclei)
        doc["name"] = f"nuclei-variant-{i}"
        if schedule:
            doc["trainingApproach"]["schedule"] = schedule
        doc["trainingApproach"]["maxTrials"] = 3 + i
        yield doc
    doc = copy.deepcopy(brain)  # the brain model on the other dataset: another snapshot Asset
    doc["name"], doc["datasetId"] = "brain-on-nuclei-data", nuclei["datasetId"]
    doc["approvalPolicy"].pop("autoApproval")  # its metrics are classification metrics
    yield doc
    doc = copy.deepcopy(brain)  # manual only: a schedule of its own
    doc["name"] = "brain-manual"
    doc["trainingApproach"].pop("retrainEvery")
    yield doc


def assert_same_dag(fast: Any, straight: Any) -> None:
    serialized, expected = DagSerialization.to_dict(fast), DagSerialization.to_dict(straight)
    assert serialized == expected, _differences(serialized, expected)
    assert_same_graph(fast, straight)


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in dict.fromkeys([*a, *b])
                for d in _differences(a.get(k), b.get(k), f"{path}.{k}")]  # fmt: skip
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _differences(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


_ATOMS = (str, bytes, int, float, bool, type(None), dt.datetime, dt.date, dt.timedelta,
          dt.tzinfo, enum.Enum, type, types.FunctionType, types.BuiltinFunctionType,
          types.MethodType, types.ModuleType)  # fmt: skip


def assert_same_graph(
    a: Any, b: Any, path: str = "dag", seen: dict[int, int] | None = None
) -> None:
    """Equal values everywhere, and the same sharing: an object reached twice in one graph is
    reached at the same places in the other."""
    seen = {} if seen is None else seen
    if isinstance(a, weakref.ProxyType) or isinstance(b, weakref.ProxyType):
        # a mapped operator's weak proxy to its task group is the group itself after a pickle
        # round trip (as in every DAG from the build cache); the group is compared elsewhere
        assert a.__class__ is b.__class__, f"{path}: {a.__class__} != {b.__class__}"
        return
    if isinstance(a, _ATOMS):
        assert type(a) is type(b) and a == b, f"{path}: {a!r} != {b!r}"
        return
    if id(a) in seen:
        assert seen[id(a)] == id(b), f"{path}: shared differently"
        return
    seen[id(a)] = id(b)
    assert type(a) is type(b), f"{path}: {type(a)} != {type(b)}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys {list(a)} != {list(b)}"
        for key in a:
            assert_same_graph(a[key], b[key], f"{path}[{key!r}]", seen)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: {len(a)} != {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_graph(x, y, f"{path}[{i}]", seen)
    elif isinstance(a, (set, frozenset)):
        assert a == b, f"{path}: {a!r} != {b!r}"
    else:
        names = [f.name for f in attrs.fields(type(a))] if attrs.has(type(a)) else []
        names += [n for cls in type(a).__mro__ for n in getattr(cls, "__slots__", ())
                  if isinstance(n, str) and n != "__weakref__"]  # fmt: skip
        state = {k: v for k, v in getattr(a, "__dict__", {}).items() if k != "_log"}
        other = {k: v for k, v in getattr(b, "__dict__", {}).items() if k != "_log"}
        assert list(state) == list(other), f"{path}: attributes {list(state)} != {list(other)}"
        for name in dict.fromkeys([*names, *state]):
            assert_same_graph(getattr(a, name, None), getattr(b, name, None),
                              f"{path}.{name}", seen)  # fmt: skip
        if not names and not state and type(a).__eq__ is not object.__eq__:
            assert a == b, f"{path}: {a!r} != {b!r}"


def _fast(template_entry: ModelEntry, entry: ModelEntry) -> Any:
    template = dag_template(build_dag(template_entry, OPTIONS))
    return copy_dag(template, entry, OPTIONS)


@pytest.fixture
def entries(stored: Engine) -> list[ModelEntry]:  # noqa: F811
    with session_scope(stored) as session:
        for doc in _varied_docs():
            create_model(session, doc, actor="t")
    return query_entries()


def test_fast_path_dag_is_the_straightforward_build(entries: list[ModelEntry]) -> None:
    shapes: dict[tuple[Any, ...], list[ModelEntry]] = {}
    for entry in entries:
        shapes.setdefault(dag_shape(entry), []).append(entry)
    pairs = [(group[j - 1], group[j]) for group in shapes.values() for j in range(1, len(group))]
    pairs += [(group[-1], group[0]) for group in shapes.values() if len(group) > 1]
    names = {e.name for pair in pairs for e in pair}
    # both examples and most variants take the fast path (several shapes)
    assert {"brain-mri-tumour-classifier", "nuclei-segmenter"} <= names
    assert len(names) >= 8 and len(shapes) >= 4
    for template, entry in pairs:
        fast = _fast(template, entry)
        assert fast is not None, entry.name
        assert fast.dag_id == entry.dag_id
        assert_same_dag(fast, build_dag(entry, OPTIONS))


def _leaves(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaves(item, (*path, i))
    else:
        yield path, value


def _changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "x"
    return "changed"


def _with(doc: dict[str, Any], path: tuple, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


def test_every_single_change_of_a_config_keeps_the_fast_path_exact(
    entries: list[ModelEntry],
) -> None:
    """Each value of a stored entry changed alone (also values no check would let through):
    when the shape stays the same, the copy equals the straightforward build, or the copy is
    refused and the straightforward build decides."""
    compared = 0
    for base in [e for e in entries if e.name in ("brain-mri-tumour-classifier",
                                                   "nuclei-segmenter")]:  # fmt: skip
        template = dag_template(build_dag(base, OPTIONS))
        shape = dag_shape(base)
        body = base.body()
        for path, value in _leaves(body):
            entry = ModelEntry(**_with(body, path, _changed(value))).with_digest()
            try:
                entry_shape = dag_shape(entry)
            except (ValueError, TypeError):
                continue  # the factory's loop builds it straight and reports the error
            if entry_shape != shape:
                continue
            fast = copy_dag(template, entry, OPTIONS)
            try:
                straight = build_dag(entry, OPTIONS)
            except ValueError:
                assert fast is None, path
                continue
            assert fast is not None, path
            assert_same_dag(fast, straight)
            compared += 1
    assert compared > 40


def test_refused_values_leave_the_decision_to_the_straightforward_build(
    entries: list[ModelEntry],
) -> None:
    brain = next(e for e in entries if e.name == "brain-mri-tumour-classifier")
    template = dag_template(build_dag(brain, OPTIONS))
    too_many = dataclasses.replace(brain, training={**brain.training, "maxTrials": 10**6})
    assert copy_dag(template, too_many, OPTIONS) is None  # a scheduled DAG refuses the default
    with pytest.raises(ValueError, match="not allowed to define a Schedule"):
        build_dag(too_many, OPTIONS)
    unsafe = dataclasses.replace(brain, description="clears the screen \x1b[2J")
    assert copy_dag(template, unsafe, OPTIONS) is None


def test_factory_copies_same_shape_configs_and_keeps_the_dags(
    entries: list[ModelEntry],
) -> None:
    first: dict[str, Any] = {}
    result = build_dags(first, backend="local")
    assert result.errors == {} and result.copied >= 5
    assert result.built == len(entries)
    for entry in entries:
        assert_same_dag(first[entry.dag_id], build_dag(entry, OPTIONS))
    # the next parse: the straightforward builds come from the build cache, the copies are made
    # again (never written to it: making one costs less than unpickling it)
    cache = Path(os.environ["PATIENT_ML_HOME"]) / "cache" / BUILD_CACHE
    written = cache.stat().st_mtime_ns
    second: dict[str, Any] = {}
    again = build_dags(second, backend="local")
    assert again.built == again.copied == result.copied
    assert cache.stat().st_mtime_ns == written  # nothing new to keep: the file is not rewritten
    assert len(build_cache.load(cache.parent)) == len(entries) - result.copied
    for entry in entries:
        expected = DagSerialization.to_dict(first[entry.dag_id])
        assert DagSerialization.to_dict(second[entry.dag_id]) == expected


def test_the_comparison_sees_a_difference(entries: list[ModelEntry]) -> None:
    """Negative control: two configs' DAGs differ for both comparisons; a copy without the
    swaps differs in its object graph even where the serialized DAGs hide it."""
    brain, variant = (next(e for e in entries if e.name == name)
                      for name in ("brain-mri-tumour-classifier", "brain-variant-2"))  # fmt: skip
    with pytest.raises(AssertionError, match=r"brain.variant.2"):
        assert_same_dag(build_dag(variant, OPTIONS), build_dag(brain, OPTIONS))
    straight = build_dag(brain, OPTIONS)
    changed = build_dag(brain, OPTIONS)
    curate: Any = changed.task_dict["curate"]
    curate.model_id = "another"  # not a serialized attribute
    with pytest.raises(AssertionError, match="model_id"):
        assert_same_graph(changed, straight)
    shared = build_dag(brain, OPTIONS)
    shared.task_dict["deploy"].outlets = list(shared.task_dict["deploy"].outlets)
    with pytest.raises(AssertionError, match="shared differently"):
        assert_same_graph(shared, straight)


def test_a_row_the_copy_cannot_read_gets_the_config_error_dag(
    entries: list[ModelEntry],
    stored: Engine,  # noqa: F811
) -> None:
    """A value of the wrong type written around the checks: the copy gives up and the
    straightforward build reports it, as for any config (the other DAGs are unaffected)."""
    import json

    from sqlalchemy import text

    variant = next(e for e in entries if e.name == "brain-variant-2")
    with session_scope(stored) as session:
        session.execute(
            text("UPDATE pml_models SET training_approach = :ta WHERE slug = :slug"),
            {"ta": json.dumps({**variant.training, "maxTrials": "many"}), "slug": variant.slug},
        )
    namespace: dict[str, Any] = {}
    with pytest.warns(UserWarning, match="brain-variant-2"):
        result = build_dags(namespace, backend="local")
    assert list(result.errors) == [variant.dag_id]
    assert "config-error" in namespace[variant.dag_id].tags
    assert len(namespace) == len(entries) and result.copied >= 4
