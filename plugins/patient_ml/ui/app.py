"""The web UI's FastAPI app, mounted by the plugin at `/patient-ml-ui` on the Airflow API server.

It serves the built single-page app (`static/`, built from the repository's `ui/` folder by
`make setup`). Airflow shows it in iframes of its own pages (`external_views`: the "Patient ML"
navigation entry, and a "Patient ML" tab on DAGs and DAG runs), same origin, so the page calls
the REST API at `/v1/patient-ml` with the user's own Airflow session cookie: no second login,
and every page shows and allows exactly what the REST API allows that user.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

URL_PREFIX = "/patient-ml-ui"
STATIC = Path(__file__).parent / "static"

MISSING_BUILD = """<!doctype html><meta charset="utf-8"><title>Patient ML</title>
<body style="font-family: sans-serif; padding: 1rem">
<h1>Patient ML: the web UI is not built</h1>
<p>This installation has no built front end (<code>{static}</code> is missing). Run
<code>make setup</code> in the repository (it runs <code>npm ci</code> and
<code>npm run build</code> in <code>ui/</code>), or install the wheel, which ships it.</p>
"""


# Vite names built chunks <name>-<8 hash characters>.js|css: a new build gets new names.
HASHED = re.compile(r"-[A-Za-z0-9_-]{8}\.(js|css)$")


class BuiltAssets(StaticFiles):
    """The build's assets; content-hashed ones are cached for a year (never revalidated)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response: Response = await super().get_response(path, scope)
        if response.status_code == 200 and HASHED.search(path):
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response


def create_ui_app(static: Path = STATIC) -> FastAPI:
    app = FastAPI(title="Patient ML web UI", docs_url=None, redoc_url=None, openapi_url=None)
    index = static / "index.html"
    if (static / "assets").is_dir():
        app.mount("/assets", BuiltAssets(directory=static / "assets"), name="assets")

    @app.get("/", include_in_schema=False, response_model=None)
    def page() -> FileResponse | HTMLResponse:
        # One page; the view (models, model, run) comes from the query string Airflow's tabs
        # fill in ({DAG_ID}, {RUN_ID}). Never cached: a new build must show at once.
        if not index.is_file():
            return HTMLResponse(MISSING_BUILD.format(static=static), status_code=503)
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    return app
