"""Built DAGs kept between parses, so a parse only builds the DAGs whose config changed.

Building an Airflow DAG costs about 2 ms of Python per model (mostly BaseOperator and DAG
constructors); loading an already built one from a pickle costs a fraction of that (as does
copying a DAG of the same shape, see `build.copy_dag`). Each DAG is
stored under a key made of its config's digest, the factory options, and the code that builds
it (this package's factory and operator sources, the Airflow and Python versions), so any change
to one of them rebuilds it. The file lives in the owner-only cache folder and is refused when
another user could have written it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import stat
import sys
from functools import cache
from pathlib import Path
from typing import Any

from patient_ml.factory.catalog import write_private

log = logging.getLogger("patient_ml.factory")

BUILD_CACHE = "dag-build-cache.pickle"


@cache
def code_version() -> str:
    """Digest of everything a built DAG depends on besides its config and options."""
    import airflow

    import patient_ml

    package = Path(patient_ml.__file__).parent
    digest = hashlib.sha256(f"{airflow.__version__}|{sys.version}".encode())
    for folder in ("factory", "operators", "triggers"):
        for source in sorted((package / folder).glob("*.py")):
            digest.update(source.name.encode())
            digest.update(source.read_bytes())
    return digest.hexdigest()


def entry_key(entry_digest: str, options_key: str) -> str:
    return hashlib.sha256(f"{code_version()}|{options_key}|{entry_digest}".encode()).hexdigest()


def load(cache_dir: Path | None) -> dict[str, Any]:
    """key → DAG from the cache file; empty when absent, unsafe or unreadable."""
    if cache_dir is None:
        return {}
    path = cache_dir / BUILD_CACHE
    try:
        info = path.stat()
    except FileNotFoundError:
        return {}
    if not _trusted(info):
        log.warning(
            "DAG build cache %s is not owned by this user or is writable by others; ignoring it "
            "(fix: chmod 600 it, or delete it)",
            path,
        )
        return {}
    try:
        with path.open("rb") as handle:
            loaded = pickle.load(handle)
    except Exception as exc:  # a cache from another version, or a torn file: rebuild
        log.info("DAG build cache %s is unusable (%s); rebuilding", path, exc)
        return {}
    return loaded if isinstance(loaded, dict) else {}


def save(cache_dir: Path | None, dags: dict[str, Any]) -> None:
    if cache_dir is None:
        return
    path = cache_dir / BUILD_CACHE
    try:
        write_private(path, pickle.dumps(dags, protocol=pickle.HIGHEST_PROTOCOL))
    except (OSError, pickle.PicklingError, TypeError, AttributeError) as exc:
        log.warning("cannot save the DAG build cache %s: %s", path, exc)


def _trusted(info: os.stat_result) -> bool:
    owner_ok = not hasattr(os, "getuid") or info.st_uid == os.getuid()
    return owner_ok and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
