"""safe_extract: a model archive never writes outside its folder, with and without tarfile's
data filter (Python < 3.11.4, e.g. Debian bookworm's 3.11.2, has none)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from patient_ml.storage.archives import safe_extract


def _archive(tmp_path: Path, members: list[tarfile.TarInfo]) -> Path:
    path = tmp_path / "model.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for info in members:
            data = b"x" * info.size if info.isfile() else None
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 3
    return info


def _link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


@pytest.fixture(params=["data filter", "no data filter"])
def filter_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "no data filter":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    return str(request.param)


def test_a_model_folder_is_extracted(tmp_path: Path, filter_mode: str) -> None:
    archive = _archive(tmp_path, [_file("weights.npz"), _file("sub/meta.json")])
    dest = tmp_path / "out"
    dest.mkdir()
    with tarfile.open(archive) as tar:
        safe_extract(tar, dest)
    assert (dest / "weights.npz").read_bytes() == b"xxx"
    assert (dest / "sub" / "meta.json").is_file()


@pytest.mark.parametrize(
    "member",
    [_file("../escape.txt"), _file("/abs.txt"), _link("evil", "/etc/passwd"), _link("up", "../..")],
    ids=["dotdot", "absolute", "absolute-link", "link-up"],
)
def test_members_leaving_the_folder_are_refused(
    tmp_path: Path, filter_mode: str, member: tarfile.TarInfo
) -> None:
    """Refused, except an absolute file name, which the data filter may instead write inside
    the folder (it strips the leading slash): either way nothing lands outside."""
    archive = _archive(tmp_path, [member])
    dest = tmp_path / "out"
    dest.mkdir()
    with tarfile.open(archive) as tar:
        if member.name == "/abs.txt" and filter_mode == "data filter":
            safe_extract(tar, dest)
            assert (dest / "abs.txt").is_file()
        else:
            with pytest.raises(tarfile.TarError):
                safe_extract(tar, dest)
    assert not (tmp_path / "escape.txt").exists()
    assert not Path("/abs.txt").exists()
