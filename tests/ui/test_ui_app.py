"""The web UI's FastAPI app: the page, the built assets with their caching, and a clear page
when the front end was never built; the plugin registers the UI where Airflow shows it."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from patient_ml.ui.app import STATIC, create_ui_app


def _build(root: Path) -> Path:
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><div id=root></div>")
    (root / "assets" / "index-AbC123_x.js").write_text("console.log(1)")
    (root / "assets" / "icon.svg").write_text("<svg/>")
    return root


def test_serves_the_page_and_caches_hashed_assets(tmp_path: Path) -> None:
    client = TestClient(create_ui_app(_build(tmp_path / "static")))
    page = client.get("/", params={"view": "run", "dagId": "patient_ml__x", "dagRunId": "m"})
    assert page.status_code == 200 and "root" in page.text
    assert page.headers["cache-control"] == "no-cache"
    chunk = client.get("/assets/index-AbC123_x.js")
    assert chunk.status_code == 200
    assert chunk.headers["cache-control"] == "public, max-age=31536000, immutable"
    icon = client.get("/assets/icon.svg")
    assert icon.status_code == 200 and "immutable" not in icon.headers.get("cache-control", "")
    assert client.get("/assets/../index.html").status_code == 404


def test_says_how_to_build_when_the_front_end_is_missing(tmp_path: Path) -> None:
    missing = TestClient(create_ui_app(tmp_path / "nothing")).get("/")
    assert missing.status_code == 503
    assert "make setup" in missing.text and "npm run build" in missing.text


def test_the_repository_build_exists_after_setup() -> None:
    # `make setup` builds ui/ into the package; the wheel ships it (pyproject artifacts).
    assert (STATIC / "index.html").is_file(), "run `make setup` (npm ci && npm run build in ui/)"
    assert any((STATIC / "assets").glob("index-*.js"))


def test_plugin_shows_the_ui_in_airflows_navigation_dags_and_dag_runs() -> None:
    from patient_ml.plugin import PatientMLPlugin

    prefixes = {app["url_prefix"] for app in PatientMLPlugin.fastapi_apps}
    assert prefixes == {"/v1/patient-ml", "/patient-ml-ui"}
    views = {v["destination"]: v for v in PatientMLPlugin.external_views}
    assert set(views) == {"nav", "dag", "dag_run"}
    assert views["dag"]["href"] == "/patient-ml-ui/?view=model&dagId={DAG_ID}"
    assert "{RUN_ID}" in views["dag_run"]["href"] and "{DAG_ID}" in views["dag_run"]["href"]
    assert len({v["url_route"] for v in views.values()}) == 3  # Airflow drops duplicates
