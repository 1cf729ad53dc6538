"""The REST API's extensions for list pages and the web UI: the Models table (server search,
sort, paging), runs paging, what a caller may do, trials, deployments, the curation report, the
model card and the look-ups from Airflow DAG and DAG run ids; all authorized like the rest."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import delete, update

from patient_ml.db.engine import session_scope
from patient_ml.db.models import Approval, Metric, Snapshot, Trial, utcnow
from patient_ml.services import champion, runs
from tests.helpers import example


@pytest.fixture
def catalog(api: Any, engine: Any) -> dict[str, Any]:
    """A dataset, three models (one with approvers), runs of the first: a champion with
    metrics and trials, a newer undecided one."""
    admin = api("admin")
    dataset = admin.post("/datasets", json=example("brain_mri_dataset")).json()["dataset"]
    ids = {}
    for name, description, extra in (
        ("alpha-classifier", "Flags tumours.", {"approvalPolicy": {"approvers": []}}),
        ("beta-classifier", "Chest images.", {"approvalPolicy": {"approvers": ["admin"]}}),
        ("gamma-classifier", "Knee images.", {"approvalPolicy": {"approvers": []}}),
    ):
        body = {**example("brain_mri_model"), "name": name, "description": description, **extra}
        response = admin.post("/models", json=body)
        assert response.status_code == 200, response.text
        ids[name] = response.json()["model"]["id"]
    alpha = ids["alpha-classifier"]
    with session_scope(engine) as s:
        old = runs.create_run(
            s, alpha, actor="t", airflow_dag_id="patient_ml__alpha_classifier", airflow_run_id="m1"
        )
        old_id = old.id
        s.add(Trial(run_id=old.id, number=0, state="complete", params={"lr": 0.1}, value=0.8))
        s.add(Trial(run_id=old.id, number=1, state="failed", params={"lr": 9}, failure="NaN"))
        s.add(
            Metric(
                run_id=old.id, subject="challenger", stage="evaluation", name="accuracy", value=0.9
            )
        )
        runs.finish_run(s, old.id, status="succeeded", actor="t")
        champion.promote(s, alpha, old.id, actor="admin", reason="first")
        s.add(
            Snapshot(
                id="s" * 64,
                dataset_id=dataset["id"],
                manifest_uri="file:///m",
                example_count=10,
                counts={"bySplit": {"train": 7, "test": 3}},
                report={"examples": {"bySplit": {"train": 7, "test": 3}}, "quarantined": {}},
            )
        )
    with session_scope(engine) as s:
        new = runs.create_run(s, alpha, actor="t")
        new.started_at = utcnow()
        new_id = new.id
    return {"dataset": dataset, "ids": ids, "old": old_id, "new": new_id}


def test_model_summaries_search_sort_and_page(api: Any, catalog: dict[str, Any]) -> None:
    admin = api("admin")
    page = admin.get("/model-summaries", params={"limit": 2}).json()
    assert page["totalEntries"] == 3
    assert [m["name"] for m in page["modelSummaries"]] == ["alpha-classifier", "beta-classifier"]
    rest = admin.get("/model-summaries", params={"limit": 2, "offset": 2}).json()
    assert [m["name"] for m in rest["modelSummaries"]] == ["gamma-classifier"]
    desc = admin.get("/model-summaries", params={"sort": "name", "order": "desc"}).json()
    assert desc["modelSummaries"][0]["name"] == "gamma-classifier"
    found = admin.get("/model-summaries", params={"search": "CHEST"}).json()
    assert [m["name"] for m in found["modelSummaries"]] == ["beta-classifier"]
    assert found["totalEntries"] == 1
    by_dataset = admin.get("/model-summaries", params={"search": "brain-mri"}).json()
    assert by_dataset["totalEntries"] == 3
    wildcard = admin.get("/model-summaries", params={"search": "%"}).json()
    assert wildcard["totalEntries"] == 0  # LIKE characters are literal
    latest = admin.get("/model-summaries", params={"sort": "lastRunAt", "order": "desc"}).json()
    assert latest["modelSummaries"][0]["name"] == "alpha-classifier"

    alpha = page["modelSummaries"][0]
    assert alpha["deployed"] is True and alpha["problemType"] == "imgClf"
    assert alpha["datasetName"] == catalog["dataset"]["name"]
    assert alpha["champion"]["id"] == catalog["old"]
    # The model's objective (`validation:balancedAccuracy`), which this champion has no value of.
    assert alpha["champion"]["metricName"] == "balancedAccuracy"
    assert alpha["champion"].get("metricValue") is None
    assert alpha["lastRun"]["id"] == catalog["new"] and alpha["lastRun"]["status"] == "running"
    assert alpha["runCount"] == 2
    beta = page["modelSummaries"][1]
    assert beta["deployed"] is False and "champion" not in beta and "lastRun" not in beta

    assert api("viewer").get("/model-summaries").json()["totalEntries"] == 3
    bad = admin.get("/model-summaries", params={"sort": "secret", "limit": 0})
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["error"]["errors"]} == {"query.sort", "query.limit"}


@pytest.fixture
def airflow_dags() -> Iterator[Callable[..., None]]:
    """`add(dag_id, **columns)`: a row of Airflow's `dag` table as the DAG processor writes it
    (removed after the test)."""
    from airflow.models.dag import DagModel
    from airflow.models.dagbundle import DagBundleModel
    from airflow.utils.session import create_session

    added: list[str] = []
    with create_session() as session:
        if session.get(DagBundleModel, "pml-tests") is None:
            session.add(DagBundleModel(name="pml-tests"))

    def add(dag_id: str, **columns: Any) -> None:
        row = {
            "is_paused": False,
            "is_stale": False,
            "timetable_type": "NullTimetable",
            "timetable_summary": "None",
            **columns,
        }
        with create_session() as session:
            session.add(
                DagModel(
                    dag_id=dag_id,
                    bundle_name="pml-tests",
                    max_active_tasks=16,
                    max_consecutive_failed_dag_runs=0,
                    has_task_concurrency_limits=False,
                    **row,
                )
            )
        added.append(dag_id)

    yield add
    with create_session() as session:
        session.execute(delete(DagModel).where(DagModel.dag_id.in_(added)))


def test_next_run_says_what_airflow_will_do_for_every_model(
    api: Any, catalog: dict[str, Any], airflow_dags: Callable[..., None]
) -> None:
    """A manual DAG (the demo's models) reads `manual`, not an empty cell; a scheduled one its
    due time; a paused one, one only started by drift, an ended schedule and a DAG Airflow has
    not parsed say so."""
    due = datetime(2031, 1, 5, 2, 0, tzinfo=UTC)
    airflow_dags("patient_ml__alpha_classifier")
    airflow_dags(
        "patient_ml__beta_classifier",
        timetable_type="CronTriggerTimetable",
        timetable_summary="0 2 * * 0",
        next_dagrun_create_after=due,
    )

    def next_runs() -> dict[str, Any]:
        rows = api("viewer").get("/model-summaries").json()["modelSummaries"]
        return {m["name"].split("-")[0]: m["nextRun"] for m in rows}

    assert next_runs() == {
        "alpha": {"state": "manual"},
        "beta": {"state": "scheduled", "at": int(due.timestamp() * 1000), "schedule": "0 2 * * 0"},
        "gamma": {"state": "notInAirflow"},
    }
    airflow_dags(
        "patient_ml__gamma_classifier",
        timetable_type="AssetTriggeredTimetable",
        timetable_summary="Asset",
    )
    assert next_runs()["gamma"] == {"state": "onAssets", "schedule": "Asset"}

    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        session.execute(
            update(DagModel)
            .where(DagModel.dag_id == "patient_ml__beta_classifier")
            .values(is_paused=True)
        )
        session.execute(
            update(DagModel)
            .where(DagModel.dag_id == "patient_ml__alpha_classifier")
            .values(
                timetable_type="CronTriggerTimetable",
                timetable_summary="@once",
                next_dagrun_create_after=None,
            )
        )
    found = next_runs()
    assert found["beta"] == {"state": "paused", "schedule": "0 2 * * 0"}
    assert found["alpha"] == {"state": "ended", "schedule": "@once"}


def test_runs_page_on_the_server_and_stay_compatible(api: Any, catalog: dict[str, Any]) -> None:
    """Paging, order and status filter are extensions: the extended view also gives the total;
    the reference view keeps the reference GetRuns shape (no total)."""
    admin = api("admin")
    alpha = catalog["ids"]["alpha-classifier"]
    ext = {"view": "extended"}
    everything = admin.get(f"/models/{alpha}/runs", params=ext).json()
    assert [r["id"] for r in everything["runs"]] == [catalog["new"], catalog["old"]]
    assert everything["totalEntries"] == 2
    page = {**ext, "limit": 1, "offset": 1}
    second = admin.get(f"/models/{alpha}/runs", params=page).json()
    assert [r["id"] for r in second["runs"]] == [catalog["old"]] and second["totalEntries"] == 2
    oldest = admin.get(f"/models/{alpha}/runs", params={**ext, "order": "asc", "limit": 1}).json()
    assert oldest["runs"][0]["id"] == catalog["old"]
    done = admin.get(f"/models/{alpha}/runs", params={**ext, "status": "succeeded"}).json()
    assert [r["id"] for r in done["runs"]] == [catalog["old"]] and done["totalEntries"] == 1
    reference = admin.get(f"/models/{alpha}/runs", params={"limit": 1, "offset": 1}).json()
    assert "totalEntries" not in reference


def test_permissions_tell_who_may_decide_and_why_not(api: Any, catalog: dict[str, Any]) -> None:
    alpha, beta = catalog["ids"]["alpha-classifier"], catalog["ids"]["beta-classifier"]
    admin = api("admin").get(f"/models/{alpha}/permissions").json()["permissions"]
    assert admin == {
        "user": "admin",
        "mayRead": True,
        "mayEdit": True,
        "mayStartRun": True,
        "mayDecide": True,
        "decideReason": None,
        "approvers": [],
        "decisionRight": admin["decisionRight"],
    }
    assert "'user' role" in admin["decisionRight"] and "HITL Detail" in admin["decisionRight"]
    viewer = api("viewer").get(f"/models/{alpha}/permissions").json()["permissions"]
    assert viewer["mayEdit"] is False and viewer["mayStartRun"] is False
    assert viewer["mayDecide"] is False and "viewer" in viewer["decideReason"]
    # the viewer reads who may decide and why not before typing anything (issue 31)
    assert "Who may decide: any user with the decision right." in viewer["decideReason"]
    assert "'user' role or above" in viewer["decideReason"]
    as_viewer = api("viewer").get(f"/models/{beta}/permissions").json()["permissions"]
    assert as_viewer["approvers"] == ["admin"]
    assert "Who may decide: admin." in as_viewer["decideReason"]
    editor = api("editor").get(f"/models/{beta}/permissions").json()["permissions"]
    assert editor["mayEdit"] is True and editor["mayDecide"] is False
    assert "approvers are admin" in editor["decideReason"] and editor["approvers"] == ["admin"]
    assert api("admin").get("/models/nope/permissions").status_code == 404


def test_trials_deployments_card_and_curation_report(api: Any, catalog: dict[str, Any]) -> None:
    admin = api("admin")
    alpha = catalog["ids"]["alpha-classifier"]
    trials = admin.get(f"/models/{alpha}/runs/{catalog['old']}/trials").json()["trials"]
    assert [(t["number"], t["state"]) for t in trials] == [(0, "complete"), (1, "failed")]
    assert trials[0]["params"] == {"lr": 0.1} and trials[0]["value"] == pytest.approx(0.8)
    assert trials[1]["failure"] == "NaN" and "value" not in trials[1]
    beta = catalog["ids"]["beta-classifier"]
    foreign = admin.get(f"/models/{beta}/runs/{catalog['old']}/trials")
    assert foreign.status_code == 404  # a run of another model

    deployments = admin.get(f"/models/{alpha}/deployments").json()["deployments"]
    assert len(deployments) == 1
    assert deployments[0]["runId"] == catalog["old"] and deployments[0]["isCurrent"] is True
    assert deployments[0]["action"] == "promote" and deployments[0]["actor"] == "admin"
    assert admin.get(f"/models/{beta}/deployments").json()["deployments"] == []

    card = admin.get(f"/models/{alpha}/runs/{catalog['old']}/model-card").json()["modelCard"]
    assert card  # the model card's own tests check its content

    report = admin.get(f"/datasets/{catalog['dataset']['id']}/curation-report").json()
    assert report["curationReport"]["snapshotId"] == "s" * 64
    assert report["curationReport"]["report"]["examples"]["bySplit"] == {"train": 7, "test": 3}
    assert admin.get("/datasets/nope/curation-report").status_code == 404


def test_airflow_ids_lead_to_the_model_and_the_run(api: Any, catalog: dict[str, Any]) -> None:
    admin = api("admin")
    alpha = catalog["ids"]["alpha-classifier"]
    assert admin.get("/dags/patient_ml__alpha_classifier").json() == {"model": {"modelId": alpha}}
    assert admin.get("/dag-runs/patient_ml__alpha_classifier/m1").json() == {
        "run": {"modelId": alpha, "runId": catalog["old"]}
    }
    other_dag = admin.get("/dags/example_bash_operator")
    assert other_dag.status_code == 404
    assert "not a Patient ML model" in other_dag.json()["error"]["message"]
    assert admin.get("/dag-runs/patient_ml__alpha_classifier/nope").status_code == 404
    assert api(None).get("/dags/patient_ml__alpha_classifier").status_code == 401


def test_models_table_shows_the_champions_objective_not_accuracy(
    api: Any, engine: Any, catalog: dict[str, Any]
) -> None:
    """The demo model tunes for `validation:balancedAccuracy`: the Models table shows the
    champion's balanced accuracy on the test set (issue 31), not its accuracy."""
    with session_scope(engine) as s:
        s.add(
            Metric(
                run_id=catalog["old"],
                subject="challenger",
                stage="evaluation",
                name="balancedAccuracy",
                value=0.75,
            )
        )
    rows = api("admin").get("/model-summaries").json()["modelSummaries"]
    alpha = next(m for m in rows if m["name"] == "alpha-classifier")
    assert alpha["champion"]["metricName"] == "balancedAccuracy"
    assert alpha["champion"]["metricValue"] == pytest.approx(0.75)


def test_deployments_name_the_person_who_approved(
    api: Any, engine: Any, catalog: dict[str, Any]
) -> None:
    """The pipeline deploys as its Airflow task (`airflow:<dag>.deploy`); the row also names
    the approver whose decision it carried out (issue 31: "never the person who approved")."""
    alpha = catalog["ids"]["alpha-classifier"]
    with session_scope(engine) as s:
        s.add(
            Approval(run_id=catalog["new"], decision="approved", actor="user", user="dr-approver")
        )
        runs.finish_run(s, catalog["new"], status="succeeded", actor="t")
    with session_scope(engine) as s:
        champion.promote(
            s,
            alpha,
            catalog["new"],
            actor="airflow:patient_ml__alpha_classifier.deploy",
            reason="approved",
        )
    rows = api("admin").get(f"/models/{alpha}/deployments").json()["deployments"]
    assert rows[0]["runId"] == catalog["new"]
    assert rows[0]["actor"] == "airflow:patient_ml__alpha_classifier.deploy"
    assert rows[0]["approvedBy"] == ["dr-approver"]
    assert "approvedBy" not in rows[1]  # promoted by hand, no approval recorded


def test_monitoring_says_when_its_dag_is_paused(
    api: Any, catalog: dict[str, Any], airflow_dags: Callable[..., None]
) -> None:
    """Issue 31: the Monitoring tab said "Checked @hourly" while the monitor DAG was paused, so
    "no check has run yet" stayed forever; the API now says what Airflow will do with it."""
    alpha = catalog["ids"]["alpha-classifier"]
    viewer = api("viewer")
    dag_id = "patient_ml_monitor__alpha_classifier"
    answer = viewer.get(f"/models/{alpha}/monitoring").json()
    assert answer["monitorDag"] == {
        "dagId": dag_id,
        "state": "notInAirflow",
        "at": None,
        "schedule": None,
    }
    airflow_dags(
        dag_id, is_paused=True, timetable_type="CronTriggerTimetable", timetable_summary="@hourly"
    )
    paused = viewer.get(f"/models/{alpha}/monitoring").json()["monitorDag"]
    assert paused["state"] == "paused" and paused["schedule"] == "@hourly"
