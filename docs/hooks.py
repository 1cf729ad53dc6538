"""MkDocs hooks: publish the OpenLineage facets' JSON schemas with the site (lineage/facets/),
from the package's shipped folder, so `_schemaURL` can point at the site (docs/lineage.md); and
draw the settings' reference tables from the package's `settings.yaml` (the Airflow config
section), where a page says `<!-- settings: GROUP -->` (`core`: the settings of no group)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "plugins/patient_ml/services/lineage_schemas"
SETTINGS = ROOT / "plugins/patient_ml/settings.yaml"
MARKER = re.compile(r"<!-- settings: ([a-z_]+) -->")


def settings_table(group: str) -> str:
    """The reference table of the settings in `group` (`core`: those without a group)."""
    import yaml

    rows = [
        "| Environment variable | `[patient_ml]` key | Default | Meaning |",
        "|---|---|---|---|",
    ]
    for key, item in yaml.safe_load(SETTINGS.read_text()).items():
        if item.get("group", "core") == group:
            rows.append(
                f"| `PATIENT_ML_{key.upper()}` | `{key}` | {item['default']} | "
                f"{item['description']} |"
            )
    if len(rows) == 2:
        raise ValueError(f"no setting is in group {group!r} ({SETTINGS})")
    return "\n".join(rows)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return MARKER.sub(lambda found: settings_table(found.group(1)), markdown)


def on_post_build(config: Any, **kwargs: Any) -> None:
    target = Path(config["site_dir"]) / "lineage" / "facets"
    target.mkdir(parents=True, exist_ok=True)
    for schema in sorted(SCHEMAS.glob("*.json")):
        shutil.copyfile(schema, target / schema.name)
