"""Write the Patient ML API's OpenAPI document, as the API server serves it, to a file.

The document comes from the FastAPI app itself (`create_app().openapi()`), without a server or a
database: routes, their request and response models, operation ids and tags. The web UI's client
(ui/src/client: types, SDK functions, TanStack Query options) is generated from it by
`make ui-client`, which runs this script and then `npm run generate-client` in ui/; the test
tests/ui/test_generated_client.py fails when the committed document or client is stale.

Keys are sorted and the JSON indented, so a change to the API is a readable diff.

    python include/write_openapi.py [--out ui/openapi.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "ui" / "openapi.json"


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI document (the app is built, never started)."""
    from patient_ml.api.app import create_app

    return create_app().openapi()


def render(document: dict[str, Any]) -> str:
    """The document as committed: sorted keys, two-space indent, a final newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write it")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(openapi_document()), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
