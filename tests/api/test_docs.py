"""The API's interactive docs work offline: the page's scripts, styles and icon are served by
the API itself (from the swagger-ui-bundle-v2 package), never from a CDN."""

from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.testclient import TestClient

from patient_ml.api.app import URL_PREFIX, create_app


def test_the_docs_page_loads_every_asset_from_this_server() -> None:
    server = FastAPI()
    server.mount(URL_PREFIX, create_app())  # as Airflow's API server mounts the plugin's app
    client = TestClient(server)
    page = client.get(f"{URL_PREFIX}/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    urls += re.findall(r"""url:\s*['"]([^'"]+)['"]""", page.text)
    assert urls, page.text
    external = [u for u in urls if re.match(r"(?i)(https?:)?//", u)]
    assert external == [], external
    for url in urls:
        assert url.startswith(f"{URL_PREFIX}/"), url
        answer = client.get(url)
        assert answer.status_code == 200 and answer.content, url
    assert f"{URL_PREFIX}/docs-assets/swagger-ui-bundle.js" in urls
    assert f"{URL_PREFIX}/openapi.json" in urls
    bundle = client.get(f"{URL_PREFIX}/docs-assets/swagger-ui-bundle.js").text
    assert "SwaggerUIBundle" in bundle and len(bundle) > 500_000  # the real Swagger UI 5


def test_the_openapi_document_is_3_1_which_swagger_ui_5_renders() -> None:
    document = create_app().openapi()
    assert document["openapi"].startswith("3.1")
    assert "/docs" not in document["paths"] and "/docs-assets" not in str(document["paths"])
    assert TestClient(create_app()).get("/redoc").status_code == 404  # ReDoc needs a CDN


def test_every_route_has_a_docs_section() -> None:
    """Issue 31: the API docs put every route under "default"."""
    document = create_app().openapi()
    untagged = [
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if not operation.get("tags")
    ]
    assert untagged == []
    tags = {
        path: operations[next(iter(operations))]["tags"]
        for path, operations in document["paths"].items()
    }
    assert tags["/models/{model_id}/runs/{run_id}/approvals"] == ["Approvals"]
    assert tags["/models/{model_id}/runs/{run_id}/rollback"] == ["Deployment"]
    assert tags["/models/{model_id}/runs/{run_id}/trials"] == ["Runs"]
    assert tags["/datasets/{dataset_id}/examples/{example_id}/label"] == ["Examples and labels"]
    assert tags["/datasets/{dataset_id}/curation-report"] == ["Datasets"]
    assert tags["/models/{model_id}"] == ["Models"]
    assert tags["/model-summaries"] == ["Web UI"]
    named = {t["name"] for t in document["tags"]}
    assert {t for ts in tags.values() for t in ts} <= named
