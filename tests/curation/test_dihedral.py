"""The orientation group's coordinates: every orientation's dot product from eight numbers,
invariants that no orientation moves and that bound the best-orientation distance from below,
and the exact bound on projections."""

from __future__ import annotations

import numpy as np
import pytest

from patient_ml.curation.dihedral import GROUPS, coordinates, fit_projection, orient


def _thumbs(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 32, 32)).cumsum(axis=1).cumsum(axis=2).reshape(n, -1)
    x -= x.mean(axis=1, keepdims=True)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _best_distance(a: np.ndarray, b: np.ndarray, group: str) -> np.ndarray:
    return np.min([np.linalg.norm(a - orient(b, t, m), axis=1) for t, m in GROUPS[group]], axis=0)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_coordinates_are_orthonormal_and_give_every_orientation(group: str) -> None:
    coords = coordinates(group)
    x = _thumbs(60, 1)
    c = coords.of(x)
    assert np.allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-5)
    assert np.allclose(c[:30] @ c[30:].T, x[:30] @ x[30:].T, atol=1e-5)
    got = coords.products(c[:30], c[30:])
    want = np.stack(
        [np.einsum("md,md->m", x[:30], orient(x[30:], t, m)) for t, m in GROUPS[group]], axis=1
    )
    assert np.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_invariants_ignore_orientation_and_bound_the_best_distance(group: str) -> None:
    coords = coordinates(group)
    x = _thumbs(400, 2)
    projection = fit_projection(coords.of(x), coords, 120)
    points = projection.invariants(projection.project(coords.of(x)))
    for turns, mirrored in GROUPS[group]:
        turned = projection.invariants(projection.project(coords.of(orient(x, turns, mirrored))))
        assert np.allclose(turned, points, atol=1e-4)
    a, b = x[:200], x[200:]
    best = _best_distance(a, b, group)
    assert np.all(np.linalg.norm(points[:200] - points[200:], axis=1) <= best + 1e-4)
    pa, pb = projection.project(coords.of(a)), projection.project(coords.of(b))
    exact = np.sqrt(np.maximum(
        (pa * pa).sum(1) + (pb * pb).sum(1) - 2 * projection.best_products(pa, pb), 0))  # fmt: skip
    assert np.all(exact <= best + 1e-4)
    # the exact bound is tighter than the folded one (the point of the second stage)
    folded = np.linalg.norm(points[:200] - points[200:], axis=1)
    assert np.all(exact >= folded - 1e-4)
    if group == "d4":
        assert np.mean(exact - folded) > 0.05


def test_negated_invariants_and_bound() -> None:
    coords = coordinates("d4")
    x = _thumbs(100, 3)
    projection = fit_projection(coords.of(x), coords, 100)
    p = projection.project(coords.of(x))
    assert np.allclose(
        projection.invariants(projection.project(coords.of(-x))),
        projection.invariants(p, negated=True), atol=1e-5)  # fmt: skip
    flipped = projection.project(coords.of(-orient(x, 1, True)))
    best = projection.best_products(p, flipped, negation=True)
    assert np.allclose(best, (p * p).sum(1), atol=1e-4)  # the negated turn is found


def test_a_block_without_axes_is_left_out() -> None:
    coords = coordinates("d4")
    x = _thumbs(200, 4)
    projection = fit_projection(coords.of(x), coords, 4)  # too few axes for every block
    p = projection.project(coords.of(x))
    assert p.shape == (200, len(projection.kinds))
    best = projection.best_products(p[:100], p[100:])
    assert best.shape == (100,)
    assert np.all(best >= np.einsum("md,md->m", p[:100], p[100:]) - 1e-5)
