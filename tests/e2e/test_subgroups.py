"""Subgroups on real Airflow (the shared deployment): a challenger better overall but clearly
worse at one site is refused by the automatic policy.

The cohort: 300 patients at three sites (`DocumentReference.custodian`; Hillcrest has one
patient in five), label 1 = a bright square in the upper half of the image. Site "Hillcrest"
exports its images upside down (the square of label 1 in the lower half), a real-world kind of
site difference.

- Run 1 (the champion) cannot learn (one epoch at a learning rate that moves nothing): about
  chance everywhere. The automatic policy approves it as the first run.
- Before run 2 the Hillcrest labels of the train and validation splits are still drafts (a
  site whose labelling is late), so run 2 learns from the two upright sites only: it is much
  better overall, and systematically wrong at Hillcrest, whose test labels are confirmed.
- The policy (balanced accuracy may be worse by less than 0.1, overall and in every subgroup not
  too small to conclude) refuses run 2 on `site=Hillcrest`; the run waits in Required Actions
  whose body names the failed subgroup rule and the override requirement; the run page shows
  the subgroup table with the failing site, the rule and the override requirement.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from PIL import Image

from patient_ml.db.engine import session_scope
from patient_ml.db.models import Model, Run, Snapshot
from patient_ml.deploy import stop_old_endpoints
from patient_ml.services.approvals import decisions_of
from patient_ml.services.datasets import create_dataset
from patient_ml.services.models import create_model, get_model, model_to_wire, update_model
from tests.curation.cohort import Cohort, dataset_config
from tests.e2e.conftest import ECR_IMG_CLF_REPOSITORY, E2EDeployment
from tests.e2e.test_gate import _audit
from tests.e2e.test_web_ui import FRAME, _login, _shot, browser  # noqa: F401  (fixture)
from tests.operators.lifecycle import model_config

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

MODEL = "e2e-subgroup-classifier"
DAG_ID = "patient_ml__e2e_subgroup_classifier"
TASK = "await_approval"
SITES = ("Northfield", "Riverside", "Hillcrest")
UPSIDE_DOWN = "Hillcrest"
RULES = [{"metric": "balancedAccuracy", "margin": 0.1, "scope": "overallAndLargeSubgroups"}]
CANNOT_LEARN = [
    {"type": "categorical", "name": "epochs", "values": ["1"]},
    {"type": "categorical", "name": "image_size", "values": ["16"]},
    {"type": "categorical", "name": "learning_rate", "values": ["0.000001"]},
    {"type": "categorical", "name": "augment", "values": ["false"]},
]
LEARNS = [  # mirror only: an upside-down view would change the label
    {"type": "categorical", "name": "epochs", "values": ["20"]},
    {"type": "categorical", "name": "image_size", "values": ["16"]},
    {"type": "categorical", "name": "learning_rate", "values": ["0.01"]},
    {"type": "categorical", "name": "orientations", "values": ["lr"]},
]


def square_png(label: int, seed: int, upside_down: bool) -> bytes:
    """32 x 32 noise with a bright 8 x 8 square in the upper half (label 1) or the lower half
    (label 0); upside down: the other way round."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 140, (32, 32)).astype(np.uint8)
    upper = (label == 1) != upside_down
    row = int(rng.integers(1, 8)) + (0 if upper else 16)
    col = int(rng.integers(0, 24))
    pixels[row : row + 8, col : col + 8] = 255
    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(out, format="PNG")
    return out.getvalue()


def site_of(patient: int) -> str:
    """Hillcrest: one patient in five (so the challenger is clearly better overall)."""
    return UPSIDE_DOWN if patient % 5 == 4 else SITES[patient % 2]


def register(d: E2EDeployment) -> tuple[str, Cohort]:
    cohort = Cohort(d.sources / "subgroup-cohort", "sub01", "urn:test:e2e-subgroup-dataset")
    for p in range(300):
        site = site_of(p)
        for k in range(2):
            doc_id, label = f"s{p:04d}-{k}", (p + k) % 2
            doc = cohort.doc(
                doc_id, f"sp{p:04d}", data=square_png(label, p * 10 + k, site == UPSIDE_DOWN)
            )
            doc["custodian"] = {"display": site}
            cohort.label(f"so{p:04d}-{k}", doc_id, label)
    cohort.write_ndjson(d.root / "subgroup-ndjson")
    with session_scope(d.engine) as session:
        ds = dataset_config(
            "e2e-subgroup-dataset", "sub01", maxImagePixels=5000,
            subgroups={"attributes": ["site"], "minClusters": 5, "pairs": False},
        )  # fmt: skip
        ds["source"] = {"type": "ndjson", "uri": str(d.root / "subgroup-ndjson")}
        dataset_id = create_dataset(session, ds, actor="e2e").id
        policy = {
            "approvers": ["admin"],
            "autoApproval": {"enabled": True, "allowWithoutChampion": True},
            "nonInferiority": RULES,
        }
        config = model_config(MODEL, dataset_id, approvalPolicy=policy)
        config["trainingApproach"]["trainingImage"] = f"{ECR_IMG_CLF_REPOSITORY}:e2e"
        config["trainingApproach"]["searchSpace"] = CANNOT_LEARN
        config["deployApproach"]["inferenceImage"] = f"{ECR_IMG_CLF_REPOSITORY}:e2e"
        return str(create_model(session, config, actor="e2e").id), cohort


@pytest.fixture(scope="module")
def subgrouped(airflow_deployment: E2EDeployment) -> Iterator[dict[str, Any]]:
    d = airflow_deployment
    model_id, cohort = register(d)
    try:
        d.wait_for_dag(DAG_ID)
        yield {"d": d, "model_id": model_id, "cohort": cohort}
    finally:
        stop_old_endpoints(d.engine, model_id, keep=None, actor="e2e-cleanup")


def _champion(d: E2EDeployment, model_id: str) -> str | None:
    with session_scope(d.engine) as session:
        model = session.get(Model, model_id)
        assert model is not None
        return model.champion_id


def _run_of(d: E2EDeployment, run_id: str) -> Run:
    with session_scope(d.engine) as session:
        run = session.get(Run, run_id)
        assert run is not None
        session.expunge(run)
        return run


def _hitl_path(dag_run_id: str) -> str:
    return f"/api/v2/dags/{DAG_ID}/dagRuns/{dag_run_id}/taskInstances/{TASK}/-1/hitlDetails"


def _deferrals_reported(d: E2EDeployment, dag_run_id: str) -> int:
    """The deferring worker's exit as the scheduler saw it (see test_gate)."""
    key = f"TaskInstanceKey(dag_id='{DAG_ID}', task_id='{TASK}', run_id='{dag_run_id}'"
    log = (d.stack.home / "logs" / "scheduler.log").read_text(errors="replace")
    return sum(1 for line in log.splitlines() if "Received executor event" in line and key in line)


def _manifest(d: E2EDeployment, run_id: str) -> list[dict[str, Any]]:
    with session_scope(d.engine) as session:
        run = session.get(Run, run_id)
        assert run is not None and run.snapshot_id
        snapshot = session.get(Snapshot, run.snapshot_id)
        assert snapshot is not None
        uri = snapshot.manifest_uri
    lines = open(uri.removeprefix("file://"), "rb").read().splitlines()  # noqa: SIM115
    return [orjson.loads(line) for line in lines[1:]]


def test_better_overall_but_worse_at_one_site_is_refused(
    subgrouped: dict[str, Any],
    browser: Any,  # noqa: F811  (the fixture imported above)
) -> None:
    d, model_id, cohort = subgrouped["d"], subgrouped["model_id"], subgrouped["cohort"]
    api = d.api

    # Run 1 (cannot learn) is the first run: the policy approves it and it is deployed.
    first = api.post(f"/v1/patient-ml/models/{model_id}/runs", {"maxTrials": 1})["runId"]
    d.stack.wait_for(lambda: _champion(d, model_id) == first, 900, f"run {first} as champion")
    examples = _manifest(d, first)
    assert {e["attributes"]["site"] for e in examples} == set(SITES)

    # Hillcrest's train and validation labels are drafts before run 2; its test labels stay.
    late = {
        e["label"]["observationId"]
        for e in examples
        if e["attributes"]["site"] == UPSIDE_DOWN and e["split"] != "test"
    }
    assert late
    for obs in cohort.observations:
        if obs["id"] in late:
            obs["status"] = "preliminary"
    cohort.write_ndjson(d.root / "subgroup-ndjson")
    with session_scope(d.engine) as session:
        config = model_to_wire(get_model(session, model_id))
        config["trainingApproach"]["searchSpace"] = LEARNS
        update_model(session, model_id, config, actor="e2e")
    second = api.post(f"/v1/patient-ml/models/{model_id}/runs", {"maxTrials": 1})["runId"]

    def waiting() -> bool:
        run = _run_of(d, second)
        assert run.status != "failed", run.error
        if not (run.airflow_run_id and run.approval_requested_at):
            return False
        states = d.api.task_states(DAG_ID, run.airflow_run_id)
        return states.get(TASK) == "deferred" and _deferrals_reported(d, run.airflow_run_id) >= 1

    d.stack.wait_for(waiting, 900, f"run {second} to wait in Required Actions")
    dag_run_id = _run_of(d, second).airflow_run_id
    assert dag_run_id

    # The REST API: better overall, clearly worse at Hillcrest, refused on that subgroup only.
    run = api.get(f"/v1/patient-ml/models/{model_id}/runs/{second}?view=extended")["run"]
    gate = run["gate"]
    by_stratum = {r["stratum"]: r for r in gate["rules"]}
    assert by_stratum["overall"]["passed"] and by_stratum["overall"]["difference"] > 0
    assert not gate["objective"]["worse"]
    failing = by_stratum[f"site={UPSIDE_DOWN}"]
    assert not failing["passed"] and failing["high"] < 0
    assert [r["stratum"] for r in gate["rules"] if not r["passed"]] == [f"site={UPSIDE_DOWN}"]
    assert gate["overrideRequired"]
    groups = {g["name"]: g for g in run["evaluation"]["subgroups"]}
    hill = groups[f"site={UPSIDE_DOWN}"]
    assert hill["clusters"] >= 5 and not hill["small"]
    assert hill["differences"]["balancedAccuracy"]["high"] < 0

    # Refused by the automatic policy, with the failed subgroup rule audited.
    [declined] = _audit(d, second, "run.auto_approval.declined")
    failed = {c["name"] for c in declined.after["criteria"] if not c["passed"]}
    assert f"nonInferiority:balancedAccuracy@site={UPSIDE_DOWN}" in failed
    with session_scope(d.engine) as session:
        assert decisions_of(session, second) == []

    # Airflow's Required Action names the failed subgroup rule and the override requirement.
    detail = api.get(_hitl_path(dag_run_id))
    assert detail["options"] == ["Approve with override", "Reject"]
    body = detail["body"]
    assert f"✘ FAILS: Balanced accuracy in site={UPSIDE_DOWN}" in body
    assert "**Override required.**" in body

    # The run page: the subgroup table with the failing site, the rule, the override.
    page = _login(browser, d, "admin")
    page.goto(f"{d.stack.url}/dags/{DAG_ID}/runs/{dag_run_id}/plugin/patient-ml-run")
    ui = page.frame_locator(FRAME)
    expect(ui.get_by_test_id("run-title")).to_be_visible(timeout=60_000)
    row = ui.get_by_test_id(f"subgroup-site={UPSIDE_DOWN}")
    expect(row).to_contain_text("fails a rule")
    expect(row).to_contain_text("cl")
    expect(ui.get_by_test_id(f"subgroup-site={SITES[0]}")).not_to_contain_text("fails a rule")
    expect(ui.get_by_test_id("gate")).to_contain_text(f"site={UPSIDE_DOWN}")
    expect(ui.get_by_test_id("override-required")).to_contain_text("needs an explicit override")
    ui.get_by_test_id("subgroups").scroll_into_view_if_needed()
    _shot(page, "run-subgroups")
    ui.get_by_test_id("gate").scroll_into_view_if_needed()
    _shot(page, "run-gate-subgroup-override")
    page.context.close()

    # Reject: the refused challenger is not deployed; the champion stays.
    api.request(
        "PATCH",
        _hitl_path(dag_run_id),
        {"chosen_options": ["Reject"], "params_input": {"justification": "e2e: worse at a site"}},
    )

    def rejected() -> bool:
        with session_scope(d.engine) as session:
            return [x.decision for x in decisions_of(session, second)] == ["rejected"]

    d.stack.wait_for(rejected, 300, f"run {second} rejected")
    assert _champion(d, model_id) == first
