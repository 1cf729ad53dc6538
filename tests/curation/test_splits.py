"""Splits: patient-level, linked through identical images, stable across curations."""

from __future__ import annotations

from collections import defaultdict

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
