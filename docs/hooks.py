"""MkDocs hook: publish the OpenLineage facets' JSON schemas with the site (lineage/facets/),
from the package's shipped folder, so `_schemaURL` can point at the site (docs/lineage.md)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

SCHEMAS = Path(__file__).resolve().parents[1] / "plugins/patient_ml/services/lineage_schemas"


def on_post_build(config: Any, **kwargs: Any) -> None:
    target = Path(config["site_dir"]) / "lineage" / "facets"
    target.mkdir(parents=True, exist_ok=True)
    for schema in sorted(SCHEMAS.glob("*.json")):
        shutil.copyfile(schema, target / schema.name)
