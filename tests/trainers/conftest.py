"""Tiny synthetic channels shared by the trainer tests (host processes and Docker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.trainers.test_trainers import clf_channel, seg_channel


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trainer-data")
    clf_channel(root / "clf" / "train", per_class=40, seed=1)
    clf_channel(root / "clf" / "validation", per_class=10, seed=2)
    seg_channel(root / "seg" / "train", count=8, seed=1)
    seg_channel(root / "seg" / "validation", count=4, seed=2)
    return {"clf": root / "clf", "seg": root / "seg"}
