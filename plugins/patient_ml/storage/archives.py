"""Unpack a model archive without letting it write outside its folder.

Python 3.11.4+ has tarfile's `data` filter (PEP 706); Debian bookworm's Python 3.11.2 (the
compose image and the trainers' base image) does not, so there the same rules are checked
member by member before anything is written: no absolute paths, no `..`, no links leaving the
folder, no devices or FIFOs."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path


def safe_extract(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract every member of `tar` into `dest`; tarfile.TarError for a member that would land
    outside `dest` or is not a file, folder or in-folder link."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    root = os.path.realpath(dest)

    def inside(path: str) -> bool:
        return os.path.commonpath([root, os.path.realpath(path)]) == root

    for member in tar.getmembers():
        target = os.path.join(root, member.name)
        if os.path.isabs(member.name) or not inside(target):
            raise tarfile.TarError(f"member {member.name!r} would be written outside the folder")
        if member.issym() or member.islnk():
            link = member.linkname
            base = os.path.dirname(target) if member.issym() else root
            if os.path.isabs(link) or not inside(os.path.join(base, link)):
                raise tarfile.TarError(f"link {member.name!r} points outside the folder")
        elif not (member.isfile() or member.isdir()):
            raise tarfile.TarError(f"member {member.name!r} is not a file or folder")
        member.mode &= 0o755  # no set-uid/set-gid/sticky bits, as the data filter does
    tar.extractall(dest)
