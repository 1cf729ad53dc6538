"""The pages issue 31 found hard to read, in a real browser (Debian's Chromium through
Playwright) at 1280 x 900 and 1920 x 1080, over the real API and the built UI (the fixtures of the
model card page's test): run names and dates on one line, people rather than actor ids, the
approver of a deployment, y-axis ticks inside the chart, no page-wide horizontal overflow, a
decided run without a "No decision possible here" box, and an evaluation page without a row
left empty at 1920 px. Measured from bounding boxes; one browser, two viewports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from include.chromium import MISSING, chromium_installed, launch_chromium
from patient_ml.db.engine import session_scope
from patient_ml.db.models import Deployment, Run
from tests.services.test_model_card_document import CARD, _compared_runs
from tests.ui.test_model_card_page import admin_token as admin_token  # a fixture
from tests.ui.test_model_card_page import playwright_api
from tests.ui.test_model_card_page import server as server  # a fixture

# How many lines a piece of text takes: the tops of its text's line boxes, those less than half
# a line apart counted once.
LINES = """el => {
  const tops = [];
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const range = document.createRange();
    range.selectNodeContents(node);
    for (const r of range.getClientRects()) if (r.width > 0) tops.push(r.top);
  }
  tops.sort((a, b) => a - b);
  return tops.filter((t, i) => i === 0 || t - tops[i - 1] > 6).length;
}"""


def _lines(locator: Any) -> list[int]:
    return [int(n) for n in locator.evaluate_all(f"els => els.map({LINES})")]


def _no_page_overflow(page: Any) -> None:
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"the page scrolls sideways: {width}"


@pytest.fixture
def compared(server: tuple[str, Any], tmp_path: Path) -> dict[str, str]:
    """Two evaluated, approved runs (the first champion, deployed by the pipeline's task); one
    triggered in Airflow by admin, one through the API by dr-b."""
    _, engine = server
    first, worse = _compared_runs(engine, tmp_path, modelCard=CARD)
    with session_scope(engine) as session:
        model_id = session.get(Run, first).model_id
        session.execute(
            update(Run).where(Run.id == first).values(triggered_by="airflow-user:admin")
        )
        session.execute(update(Run).where(Run.id == worse).values(triggered_by="dr-b"))
        session.execute(
            update(Deployment)
            .where(Deployment.run_id == first)
            .values(actor="airflow:patient_ml__a_very_long_model_name_of_the_demo.deploy")
        )
    return {"model": model_id, "first": first, "worse": worse}


def test_pages_read_at_common_window_sizes(
    server: tuple[str, Any], admin_token: str, compared: dict[str, str]
) -> None:
    if not chromium_installed():
        pytest.skip(MISSING)
    base, _ = server
    with playwright_api.sync_playwright() as p:
        browser = launch_chromium(p)
        for viewport in ((1280, 900), (1920, 1080)):
            _check_pages(browser, base, admin_token, compared, viewport)
        browser.close()


def _check_pages(
    browser: Any, base: str, token: str, compared: dict[str, str], viewport: tuple[int, int]
) -> None:
    model, first = compared["model"], compared["first"]
    ui = f"{base}/patient-ml-ui/"
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    context.add_cookies([{"name": "_token", "value": token, "url": base}])
    page = context.new_page()

    # Runs: names and dates on one line each, people by name.
    page.goto(f"{ui}?view=model&modelId={model}&tab=runs")
    page.get_by_test_id("runs-table").wait_for(timeout=60_000)
    names = page.locator("[data-testid=run-name] a")
    assert names.count() == 2
    assert _lines(names) == [1, 1]
    assert _lines(page.get_by_test_id("run-times")) == [2, 2]  # start, end
    people = page.get_by_test_id("triggered-by").all_inner_texts()
    assert sorted(people) == ["admin", "dr-b"]
    _no_page_overflow(page)

    # Deployments: the approver, and what deployed, in at most two short lines.
    page.goto(f"{ui}?view=model&modelId={model}&tab=deployments")
    by = page.get_by_test_id("deployed-by")
    by.first.wait_for(timeout=60_000)
    assert "approved by dr-a" in by.first.inner_text()
    assert "airflow:" not in by.first.inner_text()
    assert max(_lines(by)) <= 2
    _no_page_overflow(page)

    # Metrics: every y-axis tick inside the chart, and axis titles.
    page.goto(f"{ui}?view=model&modelId={model}&tab=metrics")
    chart = page.get_by_test_id("metrics-chart")
    ticks = chart.locator(".recharts-yAxis-tick-labels .recharts-cartesian-axis-tick-value")
    ticks.first.wait_for(timeout=60_000)
    box = chart.bounding_box()
    assert box is not None
    for tick in ticks.all():
        found = tick.bounding_box()
        assert found is not None and found["x"] >= box["x"], "a y-axis tick is clipped"
    titles = chart.locator(".recharts-label").evaluate_all("els => els.map(e => e.textContent)")
    assert "Balanced accuracy" in titles and "run (oldest on the left)" in titles

    # A decided run: its decision once, no "No decision possible here".
    page.goto(f"{ui}?view=run&modelId={model}&runId={first}")
    page.get_by_test_id("decisions").wait_for(timeout=60_000)
    assert page.get_by_test_id("approval-blocked").count() == 0
    _no_page_overflow(page)

    # Evaluation: at 1920 px the calibration chart sits beside the matrices, not below an
    # empty row; at 1280 px nothing runs off the page.
    page.goto(f"{ui}?view=run&modelId={model}&runId={first}&tab=evaluation")
    chart = page.get_by_test_id("reliability-chart")
    chart.wait_for(timeout=60_000)
    matrices = page.get_by_test_id("confusion-matrices").bounding_box()
    reliability = page.get_by_test_id("reliability").bounding_box()
    assert matrices is not None and reliability is not None
    if viewport[0] >= 1920:
        assert reliability["y"] < matrices["y"] + matrices["height"], (matrices, reliability)
    _no_page_overflow(page)
    context.close()
