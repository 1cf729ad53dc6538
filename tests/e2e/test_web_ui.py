"""The web UI in a real browser (Debian's Chromium driven by Playwright) on the real Airflow API
server of the shared deployment: an approver logs in through Airflow's login form, finds the
model in the Models table ("Patient ML" in Airflow's navigation), opens its run, approves it
from the run page with a justification and sees the run become champion; a viewer opens the same
run from the DAG run's "Patient ML" tab and is told why they cannot decide, and the REST API
refuses them too. Before any of that, each role's user (include/demo_users.py) walks the pages
at 1280 x 900 and 1920 x 1080 while the run waits for a decision (tests/e2e/role_walk.py: no
clipped, overlapping or unreadably wrapped text, no sideways scrolling; who may decide sees the
form, the others why not). Screenshots of every page go to test-screenshots/
(PATIENT_ML_SCREENSHOTS).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from include.demo_users import APPROVER
from patient_ml.db.engine import session_scope
from patient_ml.db.models import Model, Run
from tests.conftest import REPO_ROOT
from tests.e2e.conftest import E2EDeployment, register_cohort_model
from tests.e2e.role_walk import chromium, walk_all

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
expect.set_options(timeout=30_000)  # each page's data on a busy 2-core CI machine

MODEL = "e2e-ui-classifier"
DAG_ID = "patient_ml__e2e_ui_classifier"
SCREENSHOTS = Path(os.environ.get("PATIENT_ML_SCREENSHOTS", REPO_ROOT / "test-screenshots"))
FRAME = "iframe[title='Patient ML']"
APPROVERS = ["admin", APPROVER]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as (launched, _):
        yield launched


@pytest.fixture(scope="module")
def ui_model(airflow_deployment: E2EDeployment) -> Iterator[dict[str, Any]]:
    """A dataset and a model whose approvers are `admin` and `dr-approver`, and one evaluated
    run of it that waits for a decision."""
    deployment = airflow_deployment
    model_id = register_cohort_model(
        deployment, dataset="e2e-ui-dataset", salt="ui001", model=MODEL, approvers=APPROVERS
    )
    deployment.wait_for_dag(DAG_ID)
    started = deployment.api.post(f"/v1/patient-ml/models/{model_id}/runs", {"maxTrials": 1})
    run_id = started["runId"]

    def pending() -> bool:
        with session_scope(deployment.engine) as session:
            run = session.get(Run, run_id)
            assert run is not None and run.status != "failed", run and run.error
            return run.approval_requested_at is not None

    deployment.stack.wait_for(pending, 420, f"run {run_id} to wait for a decision")
    with session_scope(deployment.engine) as session:
        run = session.get(Run, run_id)
        assert run is not None
        dag_run_id, slug = run.airflow_run_id, run.slug
    yield {"model_id": model_id, "run_id": run_id, "dag_run_id": dag_run_id, "slug": slug}


def _shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def _login(browser: Any, deployment: E2EDeployment, user: str, **context: Any) -> Any:
    """A page of a new browser context, signed in through Airflow's own login form."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, **context)
    page = ctx.new_page()
    page.goto(f"{deployment.stack.url}/")
    page.locator("input[name=username]").fill(user)
    page.locator("input[name=password]").fill(deployment.stack.password(user))
    page.keyboard.press("Enter")
    deployment.stack.wait_for(
        lambda: any(c["name"] == "_token" for c in ctx.cookies()), 60, f"{user} to sign in"
    )
    # The login page redirects by itself once signed in: let that navigation end, or the
    # caller's next page.goto is interrupted by it ("interrupted by another navigation").
    page.wait_for_url(lambda url: "login" not in url, timeout=60_000)
    page.wait_for_load_state("load")
    return page


def test_each_role_walks_the_pages(
    browser: Any, airflow_deployment: E2EDeployment, ui_model: dict[str, Any]
) -> None:
    """Under the simple auth manager, every demo user, while the run waits for a decision (before
    the next test decides it)."""
    walk_all(
        browser,
        expect,
        airflow_deployment.stack,
        model=MODEL,
        dag_id=DAG_ID,
        dag_run_id=ui_model["dag_run_id"],
        slug=ui_model["slug"],
        deciders=APPROVERS,
    )


def test_approver_finds_the_run_and_approves_it(
    browser: Any, airflow_deployment: E2EDeployment, ui_model: dict[str, Any]
) -> None:
    deployment = airflow_deployment
    page = _login(browser, deployment, "admin")

    # "Patient ML" in Airflow's navigation: the Models table, served by the plugin, same origin.
    page.goto(f"{deployment.stack.url}/")
    page.get_by_role("link", name="Patient ML").click()
    page.wait_for_url("**/plugin/patient-ml**")
    ui = page.frame_locator(FRAME)
    ui.get_by_label("Search models").fill("e2e-ui")
    row = ui.locator("[data-testid=model-row]", has_text=MODEL)
    expect(row).to_have_count(1, timeout=30_000)
    expect(ui.locator("[data-testid=model-row]")).to_have_count(1)  # the search is applied
    expect(row).to_contain_text("Not deployed")
    expect(row).to_contain_text("succeeded")
    _shot(page, "models-table")

    # The model's details, then its run, by keyboard as well as by mouse.
    row.get_by_role("link", name=MODEL).click()
    expect(ui.get_by_test_id("model-title")).to_have_text(MODEL, timeout=30_000)
    run_row = ui.locator("[data-testid=run-row]", has_text=ui_model["slug"])
    expect(run_row).to_contain_text("pending")
    _shot(page, "model-runs")
    run_row.get_by_role("link", name=ui_model["slug"]).focus()
    page.keyboard.press("Enter")
    expect(ui.get_by_test_id("run-title")).to_have_text(f"Run {ui_model['slug']}", timeout=30_000)
    # Metrics in plain words with 95 % intervals over independent clusters, counted.
    expect(ui.get_by_test_id("comparison-table")).to_contain_text("Balanced accuracy")
    expect(ui.get_by_test_id("metric-balancedAccuracy")).to_contain_text("[")
    expect(ui.get_by_test_id("test-set-size")).to_contain_text("independent cluster")
    expect(ui.get_by_test_id("resampling")).to_contain_text("resamples of the independent clusters")
    # Provenance: the images with their digests, the trainer's own report, the sampler's seed.
    expect(ui.get_by_test_id("training-digest")).to_contain_text("sha256:")
    expect(ui.get_by_test_id("inference-digest")).to_contain_text("sha256:")
    expect(ui.get_by_test_id("provenance")).to_contain_text("reported by the trainer")
    expect(ui.get_by_test_id("sampler-seed")).to_contain_text("Optuna TPESampler, seed ")
    expect(ui.get_by_test_id("tag-moved")).to_have_count(0)

    # An empty justification: the API's own field error is shown next to the field.
    form = ui.get_by_test_id("approval-form")
    form.get_by_role("button", name="Approve").click()
    expect(form).to_contain_text("Justification is empty")
    _shot(page, "run-approval")
    form.get_by_role("textbox").fill("e2e: the challenger is good enough for a first champion")
    form.get_by_role("button", name="Approve").click()
    expect(ui.get_by_test_id("decisions")).to_contain_text("approved by admin", timeout=30_000)

    # The pipeline goes on (deploy) and the page shows the new champion when it is one.
    expect(ui.get_by_test_id("champion-badge")).to_be_visible(timeout=300_000)
    _shot(page, "run-champion")
    with session_scope(deployment.engine) as session:
        model = session.get(Model, ui_model["model_id"])
        assert model is not None and model.champion_id == ui_model["run_id"]

    # Back in the Models table the model is deployed, with its champion and headline metric.
    page.goto(f"{deployment.stack.url}/plugin/patient-ml")
    ui.get_by_label("Search models").fill("e2e-ui")
    row = ui.locator("[data-testid=model-row]", has_text=MODEL)
    expect(row).to_contain_text("Deployed", timeout=30_000)
    expect(row).to_contain_text(ui_model["slug"])
    expect(row).to_contain_text("Balanced accuracy")  # the champion's objective

    # The run page's other tabs have their content.
    page.goto(
        f"{deployment.stack.url}/dags/{DAG_ID}/runs/{ui_model['dag_run_id']}/plugin/patient-ml-run"
    )
    expect(ui.get_by_test_id("run-title")).to_be_visible(timeout=30_000)
    ui.get_by_role("tab", name="Trials").click()
    expect(ui.get_by_test_id("trials-table")).to_contain_text("complete")
    expect(ui.get_by_test_id("trials-chart")).to_be_visible()
    _shot(page, "run-trials")
    ui.get_by_role("tab", name="Evaluation").click()
    expect(ui.get_by_test_id("confusion-challenger")).to_contain_text("positive")  # label names
    expect(ui.get_by_test_id("reliability-chart")).to_be_visible()  # recorded by evaluation
    _shot(page, "run-evaluation")
    ui.get_by_role("tab", name="Model card").click()
    expect(ui.get_by_text("Test classifier").first).to_be_visible()
    ui.get_by_role("tab", name="Logs").click()
    expect(ui.get_by_test_id("log-events")).not_to_contain_text("No log events", timeout=30_000)
    _shot(page, "run-logs")

    # The model's charts across runs, and the dataset's latest curation report.
    page.goto(f"{deployment.stack.url}/dags/{DAG_ID}/plugin/patient-ml-model")
    expect(ui.get_by_test_id("model-title")).to_have_text(MODEL, timeout=30_000)
    ui.get_by_role("tab", name="Metrics").click()
    expect(ui.get_by_test_id("metrics-chart")).to_be_visible()
    _shot(page, "model-metrics")
    ui.get_by_role("tab", name="Curation report").click()
    expect(ui.get_by_test_id("curation-report")).to_contain_text("confirmed")
    expect(ui.get_by_test_id("curation-report")).to_contain_text("validation")
    _shot(page, "model-curation")
    ui.get_by_role("tab", name="Deployments").click()
    expect(ui.get_by_test_id("deployments-table")).to_contain_text(ui_model["slug"])
    ui.get_by_role("tab", name="Monitoring").click()  # the deployed champion's checks
    # the monitor DAG starts paused: the tab says so, and how to start the checks
    monitoring = ui.get_by_test_id("monitoring")
    expect(monitoring).to_contain_text("the monitor DAG is paused", timeout=30_000)
    expect(monitoring).to_contain_text("airflow dags unpause patient_ml_monitor__")

    # A new model's form shows the product's own field-level errors next to the fields.
    page.goto(f"{deployment.stack.url}/plugin/patient-ml")
    ui.get_by_role("button", name="New model").click()
    form = ui.get_by_test_id("model-form")
    form.get_by_role("button", name="Create model").click()
    expect(form.get_by_test_id("error-name")).to_be_visible(timeout=30_000)
    expect(form.get_by_test_id("error-datasetId")).to_be_visible()
    _shot(page, "model-form-errors")
    page.context.close()


def test_viewer_sees_why_they_cannot_approve(
    browser: Any, airflow_deployment: E2EDeployment, ui_model: dict[str, Any]
) -> None:
    deployment = airflow_deployment
    # The viewer uses the dark colour mode: the plugin's page follows Airflow's.
    page = _login(browser, deployment, "viewer", color_scheme="dark")
    page.goto(
        f"{deployment.stack.url}/dags/{DAG_ID}/runs/{ui_model['dag_run_id']}/plugin/patient-ml-run"
    )
    ui = page.frame_locator(FRAME)
    expect(ui.get_by_test_id("run-title")).to_have_text(f"Run {ui_model['slug']}", timeout=60_000)
    # The run is decided (the approver's test above): its decision, and no form and no
    # notice, since nobody can decide any more. A pending run's notice for a user who may not
    # decide (who may, and why not, before anything is typed) is tested in test_gate.py.
    expect(ui.get_by_test_id("decisions")).to_contain_text("approved by admin", timeout=30_000)
    expect(ui.get_by_test_id("approval-who")).to_have_count(0)
    expect(ui.get_by_role("button", name="Approve")).to_have_count(0)
    parent_dark = page.evaluate("document.documentElement.classList.contains('dark')")
    frame_dark = (
        page.frame_locator(FRAME)
        .locator("html")
        .evaluate("html => html.classList.contains('dark')")
    )
    assert frame_dark == parent_dark
    _shot(page, "run-viewer-dark")

    # The DAG's "Patient ML" tab: the model's details; the viewer may not start a run.
    page.goto(f"{deployment.stack.url}/dags/{DAG_ID}/plugin/patient-ml-model")
    expect(ui.get_by_test_id("model-title")).to_have_text(MODEL, timeout=60_000)
    expect(ui.get_by_role("button", name="Start run")).to_be_disabled()
    expect(ui.locator("[data-testid=run-row]")).to_have_count(1)
    _shot(page, "model-viewer-dark")
    page.context.close()

    # What the page says is what the REST API does.
    viewer = deployment.stack.client("viewer")
    refused = viewer.request(
        "POST",
        f"/v1/patient-ml/models/{ui_model['model_id']}/runs/{ui_model['run_id']}/approvals",
        {"decision": "rejected", "description": "e2e: a viewer tries"},
        ok=(403,),
    )
    assert refused["error"]["status"] == 403 and "viewer" in refused["error"]["message"]


def test_approver_rolls_back_and_deploys_from_the_ui(
    browser: Any, airflow_deployment: E2EDeployment, ui_model: dict[str, Any]
) -> None:
    """After the first test made run 1 champion, run 2 is approved through the REST API and
    its pipeline deploys it; the approver rolls back to run 1 from the Deployments tab (with a
    confirmation and a justification) and then deploys run 2 again from its run page."""
    deployment = airflow_deployment
    model_id, first = ui_model["model_id"], ui_model["run_id"]

    def champion() -> str | None:
        with session_scope(deployment.engine) as session:
            model = session.get(Model, model_id)
            assert model is not None
            return model.champion_id

    if champion() != first:
        pytest.skip("needs run 1 as champion (test_approver_finds_the_run_and_approves_it)")
    admin = deployment.stack.client("admin")
    second = admin.post(f"/v1/patient-ml/models/{model_id}/runs", {"maxTrials": 1})["runId"]

    def evaluated() -> bool:
        with session_scope(deployment.engine) as session:
            run = session.get(Run, second)
            assert run is not None and run.status != "failed", run and run.error
            return run.approval_requested_at is not None

    deployment.stack.wait_for(evaluated, 420, f"run {second} to wait for a decision")
    path = f"/v1/patient-ml/models/{model_id}/runs/{second}"
    body: dict[str, Any] = {"decision": "approved", "description": "e2e: run 2 replaces run 1"}
    if admin.get(f"{path}?view=extended")["run"]["gate"]["overrideRequired"]:  # chance models
        body["override"] = {"justification": "e2e: both runs learn noise; which wins is chance"}
    admin.post(f"{path}/approvals", body)
    deployment.stack.wait_for(lambda: champion() == second, 300, f"run {second} to be champion")

    page = _login(browser, deployment, "admin")
    page.goto(f"{deployment.stack.url}/dags/{DAG_ID}/plugin/patient-ml-model")
    ui = page.frame_locator(FRAME)
    expect(ui.get_by_test_id("model-title")).to_have_text(MODEL, timeout=60_000)
    ui.get_by_role("tab", name="Deployments").click()
    table = ui.get_by_test_id("deployments-table")
    expect(table.get_by_role("row")).to_have_count(3)  # header, run 2, run 1
    # One rollback offered: to run 1 (run 2 is the current champion).
    expect(table.get_by_role("button", name="Roll back…")).to_have_count(1)
    table.get_by_role("button", name="Roll back…").click()
    dialog = ui.get_by_test_id("deploy-dialog")
    expect(dialog).to_contain_text(f"to run {ui_model['slug']}")
    dialog.get_by_role("button", name="Roll back").click()  # no justification: the API says so
    expect(dialog).to_contain_text("Justification is empty")
    _shot(page, "model-rollback-dialog")
    dialog.get_by_role("textbox").fill("e2e: run 2 misses small tumours")
    dialog.get_by_role("button", name="Roll back").click()
    expect(dialog).to_have_count(0, timeout=300_000)  # closed once deployed
    expect(table.get_by_role("row")).to_have_count(4, timeout=30_000)
    expect(table.get_by_role("row").nth(1)).to_contain_text("rollback")
    expect(table.get_by_role("row").nth(1)).to_contain_text("★ current")
    _shot(page, "model-deployments")
    assert champion() == first

    # Run 2 was champion before: its run page offers the rollback forward, which deploys it.
    table.get_by_role("row").nth(2).get_by_role("button", name="Open run").click()
    expect(ui.get_by_test_id("run-title")).to_be_visible(timeout=30_000)
    actions = ui.get_by_test_id("deploy-actions")
    actions.get_by_role("button", name="Roll back to this run…").click()
    dialog = ui.get_by_test_id("deploy-dialog")
    dialog.get_by_role("textbox").fill("e2e: the data of run 2 was fixed")
    dialog.get_by_role("button", name="Roll back").click()
    expect(ui.get_by_test_id("champion-badge")).to_be_visible(timeout=300_000)
    assert champion() == second
    page.context.close()

    # The viewer is offered neither, and the API refuses them.
    page = _login(browser, deployment, "viewer")
    page.goto(f"{deployment.stack.url}/dags/{DAG_ID}/plugin/patient-ml-model")
    ui = page.frame_locator(FRAME)
    ui.get_by_role("tab", name="Deployments").click()
    expect(ui.get_by_role("button", name="Roll back…").first).to_be_disabled(timeout=60_000)
    page.context.close()
    refused = deployment.stack.client("viewer").request(
        "POST", f"/v1/patient-ml/models/{model_id}/runs/{first}/rollback",
        {"description": "e2e: a viewer tries"}, ok=(403,),
    )  # fmt: skip
    assert "viewer" in refused["error"]["message"]
