"""include/trainers/img_clf/model.py in-process: the training augmentation (the symmetries of
the square, intensity changes, small affine changes) and the orientation averaging at
inference that goes with it."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

TRAINERS = Path(__file__).resolve().parents[2] / "include" / "trainers"

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def clf() -> Any:
    """img_clf's model.py (its folder and common/ on sys.path while it loads)."""
    folders = [str(TRAINERS / "img_clf"), str(TRAINERS / "common")]
    sys.path[:0] = folders
    try:
        spec = importlib.util.spec_from_file_location(
            "img_clf_model_under_test", TRAINERS / "img_clf" / "model.py"
        )
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while it loads
        spec.loader.exec_module(module)
    finally:
        for folder in folders:
            sys.path.remove(folder)
    return module


def asymmetric(n: int = 1, size: int = 16, seed: int = 0) -> Any:
    """Standardised images with no symmetry of the square (random pixels)."""
    x = np.random.default_rng(seed).normal(size=(n, 1, size, size)).astype(np.float32)
    x = (x - x.mean(axis=(1, 2, 3), keepdims=True)) / x.std(axis=(1, 2, 3), keepdims=True)
    return torch.from_numpy(x)


def standardised(x: Any) -> Any:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) / x.std(dim=(1, 2, 3), keepdim=True)


GEOMETRY_ONLY = {"rotation": 0.0, "scale": 0.0, "shift": 0.0, "gamma": 1.0, "window": 0.0}


@pytest.mark.parametrize(("orientations", "count"), [("d8", 8), ("lr", 2), ("none", 1)])
def test_augment_draws_exactly_the_orientations_asked_for(
    clf: Any, orientations: str, count: int
) -> None:
    """Without the small affine and intensity changes, every augmented image is one of the
    asked-for symmetries of its original (pixel for pixel), and over a few hundred draws each
    of them occurs."""
    aug = clf.Augmentation(orientations=orientations, sharpen=0.0, **GEOMETRY_ONLY)
    image = asymmetric()
    views = [standardised(clf.orient(image, k, m)) for k, m in clf.ORIENTATIONS[orientations]]
    batch = image.repeat(400, 1, 1, 1)
    out = clf.augment(batch, torch.Generator().manual_seed(1), aug)
    seen = set()
    for row in out:
        errors = [float((row - view[0]).abs().max()) for view in views]
        assert min(errors) < 1e-4, errors  # one of the symmetries, resampled exactly
        seen.add(int(np.argmin(errors)))
    assert seen == set(range(count))
    assert len({tuple(v) for v in clf.ORIENTATIONS["d8"]}) == 8


def test_the_eight_orientations_are_the_symmetries_of_the_square(clf: Any) -> None:
    image = asymmetric()
    views = [clf.orient(image, k, m) for k, m in clf.ORIENTATIONS["d8"]]
    for i, a in enumerate(views):  # all different
        for b in views[i + 1 :]:
            assert not torch.equal(a, b)
    closed = {tuple(clf.orient(v, 1, False).flatten().tolist()) for v in views}
    assert closed == {tuple(v.flatten().tolist()) for v in views}  # a quarter turn permutes them
    mirrored = {tuple(clf.orient(v, 0, True).flatten().tolist()) for v in views}
    assert mirrored == closed


def test_intensity_changes_are_monotone_and_vary(clf: Any) -> None:
    """Windowing and gamma keep the order of the pixel values (a monotone change, as a
    re-windowed export is) and change the image by more than a linear map."""
    aug = clf.Augmentation(
        orientations="none", rotation=0.0, scale=0.0, shift=0.0, gamma=2.0, window=0.2,
        sharpen=0.0,
    )  # fmt: skip
    image = asymmetric(size=24, seed=3)
    out = clf.augment(image.repeat(50, 1, 1, 1), torch.Generator().manual_seed(2), aug)
    order = torch.argsort(image.flatten())
    nonlinear = 0
    for row in out:
        values = row.flatten()[order]
        assert bool(torch.all(values[1:] - values[:-1] >= -1e-5))
        residual = values - standardised(image).flatten()[order]
        nonlinear += float(residual.abs().max()) > 0.05
    assert nonlinear >= 40  # almost every draw is not the identity


def test_sharpening_and_blurring_change_local_contrast_both_ways(clf: Any) -> None:
    """Edges (fine detail on a smooth background) are enhanced in some draws, softened in
    others."""
    aug = clf.Augmentation(orientations="none", sharpen=2.0, **GEOMETRY_ONLY)
    yy, xx = np.mgrid[:24, :24]
    smooth = torch.from_numpy((np.sin(xx / 5.0) + np.cos(yy / 7.0)).astype(np.float32))
    image = standardised(smooth[None, None] + 0.3 * asymmetric(size=24, seed=4))
    out = clf.augment(image.repeat(200, 1, 1, 1), torch.Generator().manual_seed(5), aug)

    def roughness(x: Any) -> Any:
        return (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(1, 2, 3))

    ratio = roughness(out) / roughness(image)
    assert float(ratio.min()) < 0.9 and float(ratio.max()) > 1.1


def test_affine_changes_stay_small(clf: Any) -> None:
    """Rotation +-10 degrees, zoom 0.9-1.1 and shift +-6 %: the augmented image still
    correlates with its original (no orientation change, no intensity change)."""
    aug = clf.Augmentation(orientations="none", gamma=1.0, window=0.0, sharpen=0.0)
    yy, xx = np.mgrid[:32, :32]
    smooth = np.exp(-((yy - 12) ** 2 + (xx - 18) ** 2) / 60.0) + 0.5 * (xx / 32)
    image = standardised(torch.from_numpy(smooth.astype(np.float32))[None, None])
    out = clf.augment(image.repeat(100, 1, 1, 1), torch.Generator().manual_seed(6), aug)
    corr = (out * image).mean(dim=(1, 2, 3))
    assert float(corr.min()) > 0.6
    assert float(corr.max()) < 0.9999  # but something moved


@pytest.mark.parametrize(("orientations", "invariant"), [("d8", True), ("lr", False)])
def test_inference_averages_over_the_trained_orientations(
    clf: Any, orientations: str, invariant: bool
) -> None:
    """With "d8" the averaged logits of an image and of its quarter turn are the same (the
    average runs over the same eight views); with "lr" they are not."""
    torch.manual_seed(0)
    net = clf.Net(2, 4, 0.0).eval()
    x = asymmetric(n=3, size=32, seed=7)[:, 0].numpy()
    turned = np.ascontiguousarray(np.rot90(x, 1, axes=(1, 2)))
    a = clf.logits_of(net, x, orientations)
    b = clf.logits_of(net, turned, orientations)
    assert np.allclose(a, b, atol=1e-5) == invariant


def test_augmentation_hyperparameters_are_parsed_and_checked(clf: Any) -> None:
    from contract import TrainerError, parse_hyperparameters

    hps = parse_hyperparameters({}, clf.HYPERPARAMETERS)
    assert clf.Augmentation.of(hps) == clf.Augmentation()
    assert hps["orientations"] == "d8"
    hps = parse_hyperparameters({"orientations": "LR", "gamma": "1.2"}, clf.HYPERPARAMETERS)
    assert clf.Augmentation.of(hps).orientations == "lr"
    with pytest.raises(TrainerError, match="orientations='d4' is not one of d8, lr, none"):
        parse_hyperparameters({"orientations": "d4"}, clf.HYPERPARAMETERS)
    with pytest.raises(TrainerError, match=re.escape("gamma='0.5' must be >= 1")):
        parse_hyperparameters({"gamma": "0.5"}, clf.HYPERPARAMETERS)
