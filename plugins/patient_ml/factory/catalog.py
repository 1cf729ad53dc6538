"""The model configs the DAG factory turns into DAGs, read cheaply and kept as last-known-good.

One bounded query (a join of models and their datasets, with a short connect and statement
timeout) returns a `ModelEntry` per stored model config: only the fields a DAG needs, as plain
JSON, no pydantic. Every successful full read is saved to `<cache>/dag-configs.json`; when the
product DB cannot be read (down, locked, not migrated) the factory builds from that file, so a
brief outage does not make Airflow deactivate every model's DAG.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patient_ml.naming import dag_id_of, slug_of_dag_id
from patient_ml.settings import env_number

if TYPE_CHECKING:
    from sqlalchemy import Engine

log = logging.getLogger("patient_ml.factory")

LAST_KNOWN_GOOD = "dag-configs.json"
# More configs than this are not read at parse time (a warning says so): one file's parse must
# stay within Airflow's dag_file_processor_timeout.
MAX_MODELS = int(env_number("PATIENT_ML_DAG_LIMIT", 5000, low=1, high=1_000_000))
CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_MS = 5000


@dataclass(frozen=True)
class ModelEntry:
    """What one model's DAG is built from (JSON-safe, so it can be cached as is)."""

    model_id: str
    name: str
    slug: str
    description: str
    dataset_id: str
    dataset_name: str
    problem_type: str
    training: dict[str, Any]
    deploy: dict[str, Any]
    approval: dict[str, Any]
    revision: int
    created_at: str
    updated_at: str
    monitoring: dict[str, Any] = field(default_factory=dict)  # the config's monitoring section
    champion_id: str | None = None  # a deployed model gets a monitor DAG
    # a chained dataset (source.fromModel): the upstream model's slug, whose predictions Asset
    # also schedules this model's training
    upstream_slug: str | None = None
    digest: str = field(default="", compare=False)

    @property
    def dag_id(self) -> str:
        return dag_id_of(self.slug)

    def body(self) -> dict[str, Any]:
        """The fields without the digest (shallow: no copying of the config dicts)."""
        return {name: getattr(self, name) for name in _BODY_FIELDS}

    def with_digest(self) -> ModelEntry:
        body = self.body()
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
        digest = hashlib.sha256(text.encode()).hexdigest()
        return ModelEntry(**body, digest=digest)


_BODY_FIELDS = tuple(f.name for f in fields(ModelEntry) if f.name != "digest")


@dataclass
class Catalog:
    """The entries to build, where they came from, and why the DB could not be read."""

    entries: list[ModelEntry]
    source: str  # "database" | "last-known-good" | "none"
    error: str | None = None
    saved_at: str | None = None


def load_catalog(*, only_dag_id: str | None = None, cache_dir: Path | None = None) -> Catalog:
    """The model entries: from the product DB, else from the last-known-good file.

    `only_dag_id` (from Airflow's parsing context) reads just that model's row.
    """
    slug = slug_of_dag_id(only_dag_id)
    if only_dag_id and slug is None:
        return Catalog([], "database")  # a DAG id that is not ours: build nothing
    try:
        entries = query_entries(slug=slug)
    except Exception as exc:  # the DB is down, locked, slow or not migrated
        reason = _describe(exc)
        saved = read_last_known_good(cache_dir)
        if saved is None:
            return Catalog([], "none", reason)
        entries, saved_at = saved
        if slug is not None:
            entries = [e for e in entries if e.slug == slug]
        return Catalog(entries, "last-known-good", reason, saved_at)
    if slug is None:
        write_last_known_good(cache_dir, entries)
    return Catalog(entries, "database")


_ENGINES: dict[str, Engine] = {}
_LOCK = threading.Lock()


def _parse_engine() -> Engine:
    """An engine with short timeouts, made once per process (the URL as the package resolves
    it: PATIENT_ML_DATABASE_URL, PATIENT_ML_CONN_ID, SQLite under PATIENT_ML_HOME)."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from patient_ml.db.engine import resolve_database_url

    url = resolve_database_url()
    with _LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                connect_args: dict[str, Any] = {"timeout": CONNECT_TIMEOUT_S}
            else:
                connect_args = {
                    "connect_timeout": CONNECT_TIMEOUT_S,
                    "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
                    "application_name": "patient-ml-dag-factory",
                }
            engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
            _ENGINES[url] = engine
    return engine


def query_entries(*, slug: str | None = None) -> list[ModelEntry]:
    """One SELECT over models joined with their datasets (at most MAX_MODELS rows).

    Plain SQL rather than the ORM classes: importing the mapped classes would cost more than
    the query itself on every parse."""
    from sqlalchemy import text

    engine = _parse_engine()
    if engine.url.get_backend_name() == "sqlite":
        path = engine.url.database
        if path and path != ":memory:" and not Path(path).exists():
            raise FileNotFoundError(f"the product database {path} does not exist")
    where = "WHERE m.slug = :slug " if slug is not None else ""
    query = text(
        "SELECT m.id, m.name, m.slug, m.description, m.training_approach, m.deploy_approach, "
        "m.approval_policy, m.revision, m.created_at, m.updated_at, d.id, d.name, "
        "d.problem_type, m.monitoring, m.champion_id, d.source "
        "FROM pml_models m JOIN pml_datasets d ON d.id = m.dataset_id "
        f"{where}ORDER BY m.slug LIMIT :limit"
    )
    params: dict[str, Any] = {"limit": MAX_MODELS + 1}
    if slug is not None:
        params["slug"] = slug
    with engine.connect() as conn:
        rows = conn.execute(query, params).all()
    if len(rows) > MAX_MODELS:
        log.warning(
            "more than %d model configs: only the first %d (by name) get a DAG; raise "
            "PATIENT_ML_DAG_LIMIT or split models over several Airflow deployments",
            MAX_MODELS,
            MAX_MODELS,
        )
        rows = rows[:MAX_MODELS]
    safe_rows = []
    for r in rows:
        if not isinstance(r[2], str) or not _SLUG.fullmatch(r[2]):
            # a DAG id is built from the slug: a stored slug that skipped validation is skipped
            log.error("model %s: its stored slug is not a valid DAG id part; skipped", r[0])
            continue
        safe_rows.append(r)
    upstream_ids = {r[0]: _upstream_id(r[15]) for r in safe_rows}
    slugs = _slugs_of(engine, safe_rows, set(upstream_ids.values()))
    return [
        ModelEntry(
            model_id=r[0],
            name=r[1],
            slug=r[2],
            description=r[3] or "",
            training=_json(r[4]),
            deploy=_json(r[5]),
            approval=_json(r[6]),
            revision=int(r[7]),
            created_at=_iso(r[8]),
            updated_at=_iso(r[9]),
            dataset_id=r[10],
            dataset_name=r[11],
            problem_type=r[12],
            monitoring=_json(r[13]),
            champion_id=r[14],
            upstream_slug=slugs.get(upstream_ids[r[0]] or ""),
        ).with_digest()
        for r in safe_rows
    ]


_SLUG = re.compile(r"[a-z0-9_]{1,200}")


def _upstream_id(source: str | Mapping[str, Any] | None) -> str | None:
    """`source.fromModel.model` of a stored dataset (the upstream model's id), or None."""
    upstream = _json(source).get("fromModel")
    model = upstream.get("model") if isinstance(upstream, dict) else None
    return model if isinstance(model, str) else None


def _slugs_of(engine: Engine, rows: list[Any], wanted: set[str | None]) -> dict[str, str]:
    """Slugs of the upstream models: from the rows read, and the few others (a parse of one
    DAG reads one row) in one more query."""
    slugs = {r[0]: r[2] for r in rows}
    missing = sorted(m for m in wanted if m and m not in slugs)
    if missing:
        from sqlalchemy import bindparam, text

        query = text("SELECT id, slug FROM pml_models WHERE id IN :ids").bindparams(
            bindparam("ids", expanding=True)
        )
        with engine.connect() as conn:
            slugs.update({r[0]: r[1] for r in conn.execute(query, {"ids": missing}).all()})
    return {k: v for k, v in slugs.items() if isinstance(v, str) and _SLUG.fullmatch(v)}


def entry_problem(entry: ModelEntry) -> str | None:
    """Why a stored model row must not become a DAG as it is (it was written around the
    config checks, e.g. by hand or by an older version), or None. Checked by the factory
    before anything is built from it: ids name folders and keys, text lands in the UI."""
    from patient_ml.config.identifiers import id_problem, shorten, text_problem
    from patient_ml.config.limits import MAX_CONFIG_BYTES, MAX_DESCRIPTION_LENGTH, MAX_NAME_LENGTH

    for where, value in (("id", entry.model_id), ("datasetId", entry.dataset_id)):
        problem = id_problem(str(value))
        if problem:
            return f"{where} {shorten(value)!r} {problem}"
    texts = (("name", entry.name, MAX_NAME_LENGTH, False),
             ("dataset name", entry.dataset_name, MAX_NAME_LENGTH, False),
             ("description", entry.description, MAX_DESCRIPTION_LENGTH, True))  # fmt: skip
    for where, value, limit, multiline in texts:
        if len(value) > limit:
            return f"{where} holds {len(value)} characters, more than {limit}"
        problem = text_problem(value, multiline=multiline)
        if problem:
            return f"{where} {problem}"
    size = len(json.dumps([entry.training, entry.deploy, entry.approval], default=str))
    if size > MAX_CONFIG_BYTES:
        return f"the stored config holds {size} bytes, more than {MAX_CONFIG_BYTES}"
    return None


def read_last_known_good(cache_dir: Path | None) -> tuple[list[ModelEntry], str] | None:
    if cache_dir is None:
        return None
    path = cache_dir / LAST_KNOWN_GOOD
    try:
        doc = json.loads(path.read_text())
        entries = [ModelEntry(**e).with_digest() for e in doc["entries"]]
        return entries, str(doc.get("savedAt"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("last-known-good DAG configs %s are unreadable (%s); ignoring them", path, exc)
        return None


def write_last_known_good(cache_dir: Path | None, entries: list[ModelEntry]) -> None:
    """Save the entries when they differ from the saved ones (atomic replace, owner-only)."""
    if cache_dir is None:
        return
    path = cache_dir / LAST_KNOWN_GOOD
    fingerprint = hashlib.sha256("".join(e.digest for e in entries).encode()).hexdigest()
    try:
        if path.exists() and json.loads(path.read_text()).get("fingerprint") == fingerprint:
            return
    except (OSError, ValueError):
        pass
    doc = {
        "savedAt": datetime.now().astimezone().isoformat(timespec="seconds"),
        "fingerprint": fingerprint,
        "entries": [e.body() for e in entries],
    }
    try:
        write_private(path, json.dumps(doc, separators=(",", ":")).encode())
    except OSError as exc:  # a read-only home must not break parsing
        log.warning("cannot save last-known-good DAG configs to %s: %s", path, exc)


def write_private(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only, replacing any previous one atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def _json(value: str | Mapping[str, Any] | None) -> dict[str, Any]:
    if isinstance(value, str):
        loaded: dict[str, Any] = json.loads(value)
        return loaded
    return dict(value or {})


def _iso(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _describe(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]
