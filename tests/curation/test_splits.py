"""Splits: patient-level, linked through identical images, stable across curations."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from patient_ml.curation.splits import SplitInput, assign_splits, hashed_split, patient_key

RATIOS = {"train": 0.7, "validation": 0.15, "test": 0.15}
SALT = "ab" * 32


def _examples(draw_pairs: list[tuple[int, int]], offset: int = 0) -> list[SplitInput]:
    return [
        SplitInput(f"doc-{offset + i:05d}", f"p{patient}", (f"img{image}",))
        for i, (patient, image) in enumerate(draw_pairs)
    ]


def _assert_no_leak(examples: list[SplitInput], splits: dict[str, str]) -> None:
    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    for ex in examples:
        if ex.example_id in splits:
            for node in ex.nodes():
                seen[node].add(splits[ex.example_id])
    leaking = {node: s for node, s in seen.items() if len(s) > 1}
    assert leaking == {}


pairs = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 60)), min_size=1, max_size=120)


@settings(max_examples=150, deadline=None)
@given(pairs)
def test_no_patient_and_no_image_in_two_splits(draw_pairs) -> None:
    examples = _examples(draw_pairs)
    result = assign_splits(examples, {}, salt=SALT, ratios=RATIOS)
    assert result.conflicts == {}
    assert set(result.splits) == {e.example_id for e in examples}
    _assert_no_leak(examples, result.splits)


@settings(max_examples=150, deadline=None)
@given(pairs, pairs)
def test_adding_data_never_moves_an_earlier_example(first, later) -> None:
    """A second curation with more patients/images keeps every earlier split; links that would
    join two earlier splits are quarantined instead."""
    old = _examples(first)
    r1 = assign_splits(old, {}, salt=SALT, ratios=RATIOS)
    prior = dict(r1.new_assignments)
    grown = old + _examples(later, offset=len(old))
    r2 = assign_splits(grown, prior, salt=SALT, ratios=RATIOS)
    for ex in old:
        assert r2.splits[ex.example_id] == r1.splits[ex.example_id]
    _assert_no_leak(grown, r2.splits)
    assert not set(r2.new_assignments) & set(prior)
    # Conflicts only ever hit new examples and only when they bridge two earlier splits.
    assert all(int(doc.split("-")[1]) >= len(old) for doc in r2.conflicts)


def test_identical_image_links_two_patients_into_one_split() -> None:
    examples = [
        SplitInput("a", "patient-a", ("same-image",)),
        SplitInput("b", "patient-b", ("same-image",)),
        SplitInput("c", "patient-b", ("other-image",)),
    ]
    result = assign_splits(examples, {}, salt=SALT, ratios=RATIOS)
    assert len(set(result.splits.values())) == 1


def test_bridge_between_earlier_splits_is_a_conflict() -> None:
    prior = {("patient", "pa"): "train", ("patient", "pb"): "test"}
    examples = [
        SplitInput("x1", "pa", ("img-x",)),
        SplitInput("x2", "pb", ("img-x",)),
    ]
    result = assign_splits(examples, prior, salt=SALT, ratios=RATIOS)
    assert result.splits == {"x1": "train"}
    assert "x2" in result.conflicts and "test" in result.conflicts["x2"]


def test_ratios_are_respected_and_keys_are_pseudonymous() -> None:
    keys = [patient_key(SALT, f"Patient/{i}") for i in range(20_000)]
    assert all(len(k) == 32 and "Patient" not in k for k in keys)
    assert patient_key(SALT, "Patient/1") != patient_key("cd" * 32, "Patient/1")
    counts = defaultdict(int)
    for key in keys:
        counts[hashed_split(SALT, key, RATIOS)] += 1
    assert abs(counts["train"] / 20_000 - 0.7) < 0.02
    assert abs(counts["test"] / 20_000 - 0.15) < 0.02


def _skewed_cohort(n_patients: int = 600, offset: int = 0) -> list[SplitInput]:
    """Patients of 1-12 images each (a few large linked groups), a patient's label skewed by
    its size: large patients mostly tumour, small ones mostly not; 5 % unlabelled."""
    rng = random.Random(7 + offset)
    examples = []
    for p in range(offset, offset + n_patients):
        size = rng.choice([1, 1, 1, 2, 2, 3, 4, 8, 12])
        tumour = rng.random() < (0.85 if size >= 4 else 0.35)
        for i in range(size):
            label = None if rng.random() < 0.05 else ("1" if tumour else "0")
            doc = f"doc-{p:05d}-{i:02d}"
            examples.append(SplitInput(doc, f"p{p}", (f"img-{p}-{i}",), label=label))
    return examples


def _label_shares(examples: list[SplitInput], splits: dict[str, str]) -> dict[str, float]:
    tumour: dict[str, int] = defaultdict(int)
    labelled: dict[str, int] = defaultdict(int)
    for ex in examples:
        if ex.label is not None and ex.example_id in splits:
            labelled[splits[ex.example_id]] += 1
            tumour[splits[ex.example_id]] += ex.label == "1"
    return {s: tumour[s] / labelled[s] for s in labelled}


def _fractions(splits: dict[str, str]) -> dict[str, float]:
    counts = Counter(splits.values())
    return {s: counts[s] / len(splits) for s in RATIOS}


def test_label_shares_per_split_follow_the_cohort() -> None:
    """Grouped patients with skewed labels: every split's tumour share within 2 points of the
    cohort's, and its size within 3 points of its ratio, for several salts."""
    examples = _skewed_cohort()
    overall = sum(ex.label == "1" for ex in examples) / sum(ex.label is not None for ex in examples)
    for salt in ("a" * 64, "b" * 64, "c" * 64, SALT):
        result = assign_splits(examples, {}, salt=salt, ratios=RATIOS)
        _assert_no_leak(examples, result.splits)
        for split, share in _label_shares(examples, result.splits).items():
            assert abs(share - overall) < 0.02, (salt, split, share, overall)
        for split, fraction in _fractions(result.splits).items():
            assert abs(fraction - RATIOS[split]) < 0.03, (salt, split, fraction)


def test_stratified_drawing_ignores_record_order() -> None:
    examples = _skewed_cohort(300)
    shuffled = list(examples)
    random.Random(3).shuffle(shuffled)
    first = assign_splits(examples, {}, salt=SALT, ratios=RATIOS)
    again = assign_splits(shuffled, {}, salt=SALT, ratios=RATIOS)
    assert first.splits == again.splits
    assert first.new_assignments == again.new_assignments


def test_stratified_drawing_keeps_earlier_assignments() -> None:
    """A second curation with new patients keeps every earlier example's split (labels of
    earlier examples may even change) and stratifies the newcomers around them."""
    old = _skewed_cohort(300)
    r1 = assign_splits(old, {}, salt=SALT, ratios=RATIOS)
    relabelled = [
        SplitInput(ex.example_id, ex.patient_key, ex.image_keys, label="1")
        if ex.example_id.endswith("-00")
        else ex
        for ex in old
    ]
    grown = relabelled + _skewed_cohort(300, offset=300)
    r2 = assign_splits(grown, dict(r1.new_assignments), salt=SALT, ratios=RATIOS)
    assert r2.conflicts == {}
    for ex in old:
        assert r2.splits[ex.example_id] == r1.splits[ex.example_id]
    assert not set(r2.new_assignments) & set(r1.new_assignments)
    for split, fraction in _fractions(r2.splits).items():
        assert abs(fraction - RATIOS[split]) < 0.03, (split, fraction)


def test_a_copy_found_later_keeps_both_stored_splits_and_names_the_other() -> None:
    """Two examples assigned apart (no link was known), then linked as copies: neither moves,
    each names the other's split, and they share a cluster; a new copy of both is refused."""
    first = [
        SplitInput("a", "pa", ("img-a",), track_example=True),
        SplitInput("b", "pb", ("img-b",), track_example=True),
    ]
    prior = {("patient", "pa"): "train", ("patient", "pb"): "test",
             ("image", "img-a"): "train", ("image", "img-b"): "test",
             **{node: split for ex, split in zip(first, ("train", "test"), strict=True)
                for node in ex.own_nodes() if node[1].startswith("doc:")}}  # fmt: skip
    linked = [
        SplitInput("a", "pa", ("img-a",), track_example=True, copy_keys=("img-b",)),
        SplitInput("b", "pb", ("img-b",), track_example=True, copy_keys=("img-a",)),
        SplitInput("c", "pc", ("img-c",), track_example=True, copy_keys=("img-a", "img-b")),
    ]
    result = assign_splits(linked, prior, salt=SALT, ratios=RATIOS)
    assert result.splits == {"a": "train", "b": "test"}
    assert result.copies_elsewhere == {"a": ["test"], "b": ["train"]}
    assert result.conflict_reasons == {"c": "duplicate_image_conflict"}
    assert result.clusters["a"] == result.clusters["b"] == result.clusters["c"]
    assert not any(node[1] == "img-b" and split == "train"
                   for node, split in result.new_assignments.items())  # fmt: skip


def test_clusters_are_linked_components_and_pseudonymous() -> None:
    examples = [
        SplitInput("a1", "pa", ("i1",)),
        SplitInput("a2", "pa", ("i2",)),
        SplitInput("b1", "pb", ("i3",), copy_keys=("i2",)),  # a copy of a2: one cluster
        SplitInput("c1", "pc", ("i4",)),
    ]
    result = assign_splits(examples, {}, salt=SALT, ratios=RATIOS)
    clusters = result.clusters
    assert clusters["a1"] == clusters["a2"] == clusters["b1"] != clusters["c1"]
    assert all(len(c) == 16 and set(c) <= set("0123456789abcdef") for c in clusters.values())
    assert assign_splits(examples, {}, salt="cd" * 32, ratios=RATIOS).clusters != clusters
    assert assign_splits(list(reversed(examples)), {}, salt=SALT, ratios=RATIOS).clusters == (
        clusters
    )
