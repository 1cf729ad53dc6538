"""The model card page in a real browser (Debian's Chromium through Playwright), served as
Airflow's API server serves it (the Patient ML API at /v1/patient-ml, the built UI at
/patient-ml-ui, the user signed in by Airflow's `_token` cookie): a compared, overridden run's
card shows every section, downloads as Markdown, and prints without its buttons. Its
screenshot goes to test-screenshots/run-model-card.png (copied to docs/screenshots)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from include.chromium import MISSING, chromium_installed, launch_chromium
from patient_ml.db import schema
from patient_ml.db.engine import get_engine
from patient_ml.ui.app import STATIC
from tests.api.conftest import ROLES
from tests.services.test_model_card_document import CARD, _compared_runs

playwright_api = pytest.importorskip("playwright.sync_api")
# As the e2e tests: into test-screenshots/ (PATIENT_ML_SCREENSHOTS); docs/screenshots holds a copy.
SCREENSHOT = (
    Path(
        os.environ.get(
            "PATIENT_ML_SCREENSHOTS", Path(__file__).resolve().parents[2] / "test-screenshots"
        )
    )
    / "run-model-card.png"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    """The API and the built UI on a local port, over a fresh SQLite product DB."""
    import uvicorn

    from patient_ml.api.app import create_app
    from patient_ml.ui.app import create_ui_app

    if not (STATIC / "index.html").is_file():
        pytest.fail("the UI is not built: run `make setup` (npm run build in ui/)")
    url = f"sqlite:///{tmp_path / 'patient_ml.db'}"
    schema.upgrade(get_engine(url, check_schema=False))
    monkeypatch.setenv("PATIENT_ML_DATABASE_URL", url)
    root = FastAPI()
    root.mount("/v1/patient-ml", create_app())
    root.mount("/patient-ml-ui", create_ui_app())
    port = _free_port()
    running = uvicorn.Server(uvicorn.Config(root, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", get_engine(url)
    running.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def admin_token() -> str:
    """Airflow's session JWT of user admin, as its login sets the `_token` cookie."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True
    )
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    user = SimpleAuthManagerUser(username="admin", role=ROLES["admin"])
    return str(create_auth_manager().generate_jwt(user))


def test_the_model_card_page_reads_prints_and_downloads(
    server: tuple[str, Any], admin_token: str, tmp_path: Path
) -> None:
    if not chromium_installed():
        pytest.skip(MISSING)
    base, engine = server
    _, worse = _compared_runs(engine, tmp_path, modelCard=CARD)
    from patient_ml.db.engine import session_scope
    from patient_ml.services.runs import get_run

    with session_scope(engine) as session:
        run = get_run(session, worse)
        model_id, slug = run.model_id, run.slug
    with playwright_api.sync_playwright() as p:
        browser = launch_chromium(p)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.add_cookies([{"name": "_token", "value": admin_token, "url": base}])
        page = context.new_page()
        page.goto(f"{base}/patient-ml-ui/?view=run&modelId={model_id}&runId={worse}")
        link = page.get_by_test_id("model-card-link")
        link.click()
        card = page.get_by_test_id("model-card")
        card.wait_for(timeout=60_000)
        assert f"view=modelCard&modelId={model_id}&runId={worse}" in page.url
        text = card.inner_text()
        for heading in ("Intended use", "Data provenance", "Population", "Failure gallery",
                        "Calibration", "Limitations and known failure modes", "Lineage",
                        "Decisions"):  # fmt: skip
            assert heading in text, heading
        assert CARD["intendedUse"] in text and "Override: a second read covers" in text
        assert "null" not in text and "undefined" not in text and "file://" not in text
        metrics = page.get_by_test_id("card-metrics").inner_text()
        assert "Balanced accuracy" in metrics and "[" in metrics
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)

        with page.expect_download() as started:
            page.get_by_test_id("download-markdown").click()
        download = started.value
        assert download.suggested_filename.startswith("model-card-") and slug in (
            download.suggested_filename
        )
        saved = tmp_path / "card.md"
        download.save_as(saved)
        assert saved.read_text().startswith("# Model card: ")

        page.emulate_media(media="print")
        assert not page.get_by_test_id("download-markdown").is_visible()
        assert page.get_by_test_id("card-decisions").is_visible()
        browser.close()
