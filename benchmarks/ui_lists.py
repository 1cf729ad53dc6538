"""The web UI's lists at size: 1,000 models and 10,000 runs of one model; prints its figures.

    .venv/bin/python benchmarks/ui_lists.py [--models 1000] [--runs 10000] [--serve]

Seeds a fresh SQLite product DB (one dataset and model through the services, the others copied
in bulk, runs with evaluation metrics and decisions), starts a real Airflow API server with the
plugin, and measures in Debian's Chromium (Playwright) how long the Patient ML pages take from
navigation until their server-paged tables are rendered: the Models table (first page, search,
sort by last run, last page) and the model's Runs tab (first and last page). It also times the
REST calls behind them. `--serve` keeps the server running with the seeded data (to look at
the pages by hand: it prints the URL and the admin password) until Ctrl-C.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import smoke  # noqa: E402
from include.chromium import launch_chromium  # noqa: E402


def seed(database_url: str, models: int, runs: int) -> dict[str, Any]:
    """`models` models (the first through the services), `runs` runs of the first one."""
    from sqlalchemy import insert

    from patient_ml.db import schema
    from patient_ml.db.engine import get_engine, session_scope
    from patient_ml.db.models import Approval, Metric, Model, Run
    from patient_ml.naming import model_slug
    from patient_ml.services.datasets import create_dataset
    from patient_ml.services.models import create_model
    from tests.curation.cohort import dataset_config
    from tests.operators.lifecycle import model_config

    schema.upgrade(get_engine(database_url, check_schema=False))
    engine = get_engine(database_url)
    with session_scope(engine) as session:
        dataset = create_dataset(session, dataset_config("bench-dataset", "bench01"), actor="bench")
        first = create_model(session, model_config("bench-model-0000", dataset.id), actor="bench")
        template = {c.name: getattr(first, c.name) for c in Model.__table__.columns}
        first_id = first.id
        problem = dataset.problem_definition
    now = datetime.now(UTC)
    rows = []
    for i in range(1, models):
        name = f"bench-model-{i:04d}"
        rows.append(
            {
                **copy.deepcopy(template),
                "id": str(uuid.uuid4()),
                "name": name,
                "slug": model_slug(name),
                "description": f"Benchmark model {i} ({'brain' if i % 2 else 'chest'} images).",
                "created_at": now - timedelta(minutes=i),
                "updated_at": now - timedelta(minutes=i),
            }
        )
    run_rows, metric_rows, approval_rows = [], [], []
    config = {
        "problemDefinition": problem,
        "trainingApproach": template["training_approach"],
        "deployApproach": template["deploy_approach"],
    }
    for i in range(runs):
        run_id = str(uuid.uuid4())
        started = now - timedelta(hours=runs - i)
        run_rows.append(
            {
                "id": run_id,
                "slug": f"bench-run-{i:05d}",
                "model_id": first_id,
                "status": "succeeded" if i % 10 else "failed",
                "started_at": started,
                "ended_at": started + timedelta(minutes=20),
                "hyperparameters": [{"name": "epochs", "value": "3"}],
                "model_revision": 1,
                "config": config,
                "triggered_by": "bench",
                "is_archived": False,
            }
        )
        for subject, value in (("challenger", 0.80 + (i % 17) / 100), ("champion", 0.85)):
            for name in ("accuracy", "balancedAccuracy"):
                metric_rows.append(
                    {
                        "run_id": run_id,
                        "subject": subject,
                        "stage": "evaluation",
                        "name": name,
                        "value": value,
                        "direction": "maximize",
                    }
                )
        if i % 10:
            approval_rows.append(
                {
                    "run_id": run_id,
                    "decision": "rejected",
                    "description": "benchmark",
                    "actor": "user",
                    "user": "bench",
                    "decided_at": started + timedelta(minutes=30),
                }
            )
    with session_scope(engine) as session:
        if rows:
            session.execute(insert(Model), rows)
        for table, batch in ((Run, run_rows), (Metric, metric_rows), (Approval, approval_rows)):
            for start in range(0, len(batch), 5000):
                session.execute(insert(table), batch[start : start + 5000])
    engine.dispose()
    return {"model_id": first_id}


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/api/v2/version", timeout=5).status_code < 500
    except requests.RequestException:
        return False


def timed(fn: Any, repeat: int = 5) -> float:
    """Median seconds of `fn()` over `repeat` calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=10000)
    parser.add_argument("--serve", action="store_true", help="keep the server up afterwards")
    args = smoke.parse(parser, models=5, runs=30)

    from playwright.sync_api import sync_playwright

    from include.airflow_stack import AirflowStack

    root = Path(tempfile.mkdtemp(prefix="pml-ui-bench-"))
    database = f"sqlite:///{root / 'product.db'}"
    started = time.perf_counter()
    seeded = seed(database, args.models, args.runs)
    print(
        f"seeded {args.models} models and {args.runs} runs in {time.perf_counter() - started:.1f} s"
    )
    stack = AirflowStack(
        root / "airflow",
        env={"PATIENT_ML_HOME": str(root / "pml-home"), "PATIENT_ML_DATABASE_URL": database},
    )
    stack.migrate()
    stack.start(("api-server",))
    try:
        stack.wait_for(lambda: _answers(stack.url) and stack.passwords_file.exists(), 600, "API")
        token = requests.post(
            f"{stack.url}/auth/token",
            json={"username": "admin", "password": stack.password("admin")},
            timeout=30,
        ).json()["access_token"]
        api = requests.Session()
        api.headers["Authorization"] = f"Bearer {token}"
        v1 = f"{stack.url}/v1/patient-ml"
        model_id = seeded["model_id"]
        last = max(0, args.runs - 25)
        calls = {
            "GET /model-summaries (first page of 25)": "/model-summaries?limit=25",
            "GET /model-summaries?search=brain": "/model-summaries?limit=25&search=brain",
            "GET /model-summaries?sort=lastRunAt&order=desc": "/model-summaries?limit=25"
            "&sort=lastRunAt&order=desc",
            "GET /models/{id}/runs (first page of 25)": f"/models/{model_id}/runs?limit=25",
            f"GET /models/{{id}}/runs (last page, offset {last})": f"/models/{model_id}/runs"
            f"?limit=25&offset={last}",
        }
        print(f"\nREST API (median of 5, {args.models} models, {args.runs} runs):")
        for label, path in calls.items():
            seconds = timed(lambda path=path: api.get(v1 + path, timeout=60).raise_for_status())
            print(f"  {label:<55} {seconds * 1000:7.0f} ms")

        ui = f"{stack.url}/patient-ml-ui/"
        rows = "[data-testid=model-row]"
        with sync_playwright() as p:
            browser = launch_chromium(p)
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.add_cookies([{"name": "_token", "value": token, "url": stack.url}])
            page = context.new_page()
            print("\nPages in Chromium (until the paged table is rendered, median of 5):")

            def models() -> None:
                page.goto(f"{ui}?view=models")
                page.wait_for_selector(rows, timeout=30_000)

            def runs() -> None:
                page.goto(f"{ui}?view=model&modelId={model_id}")
                page.wait_for_selector("[data-testid=run-row]", timeout=30_000)

            def changed(action: Any, selector: str) -> float:
                """Seconds from `action()` until the first row of `selector` changes."""
                first = page.locator(selector).first.inner_text()
                start = time.perf_counter()
                action()
                page.wait_for_function(
                    "([s, first]) => document.querySelector(s)?.innerText !== first",
                    arg=[selector, first],
                    timeout=30_000,
                )
                return time.perf_counter() - start

            def sort_models() -> float:
                models()
                return changed(lambda: page.get_by_label("Sort by Model").click(), rows)

            def next_runs() -> float:
                runs()
                return changed(
                    lambda: page.get_by_role("button", name="Next").click(),
                    "[data-testid=run-row]",
                )

            figures = {
                "Models table, first page (page load)": timed(models),
                "Model details, Runs tab, first page (page load)": timed(runs),
                "Models table, sort by name descending (click)": statistics.median(
                    sort_models() for _ in range(5)
                ),
                "Runs tab, next page (click)": statistics.median(next_runs() for _ in range(5)),
            }
            for label, seconds in figures.items():
                print(f"  {label:<55} {seconds * 1000:7.0f} ms")
            load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            print(f"\n(load average during the run: {load}; {os.cpu_count()} CPUs)")
            if args.serve:
                print(
                    f"\nServing {ui} (admin, password {stack.password('admin')}); Ctrl-C stops",
                    flush=True,
                )
                while True:
                    time.sleep(3600)
            browser.close()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
