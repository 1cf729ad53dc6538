"""Screenshots of the MLflow UI that mirrors Patient ML (docs/mlflow.md), in Debian's Chromium
at 1,440 px: the model's experiment (the runs with their nested trial runs), a trial's metric
history, the registered model with its `champion` alias, and the champion version's tags.

    .venv/bin/python include/mlflow_screenshots.py --url http://127.0.0.1:5000 \\
        [--model NAME] [--out docs/screenshots]

Against the MLflow server the demo mirrored to (`make demo` with an Airflow connection
`mlflow_default` in its environment, docs/mlflow.md#the-demo).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlflow import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from include.chromium import launch_chromium


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="the MLflow tracking server's URL")
    ap.add_argument("--model", help="registered model name (default: the one with a champion)")
    ap.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument("--width", type=int, default=1440)
    args = ap.parse_args()
    url = args.url.rstrip("/")
    client = MlflowClient(tracking_uri=url)
    models = [
        m for m in client.search_registered_models() if not args.model or m.name == args.model
    ]
    model = next((m for m in models if "champion" in (m.aliases or {})), None)
    if model is None:
        print("no registered model with a `champion` alias", file=sys.stderr)
        return 1
    champion = client.get_model_version_by_alias(model.name, "champion")
    experiment = client.get_experiment_by_name(f"patient-ml/{model.name}")
    assert experiment is not None, f"no experiment patient-ml/{model.name}"
    parent = client.get_run(str(champion.run_id))
    trials = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    args.out.mkdir(parents=True, exist_ok=True)

    from playwright.sync_api import sync_playwright

    eid = experiment.experiment_id
    with sync_playwright() as p:
        browser = launch_chromium(p)
        ctx = browser.new_context(viewport={"width": args.width, "height": args.height})
        page = ctx.new_page()
        page.set_default_timeout(60_000)

        def shot(name: str, path: str, wait_for: str, expand: bool = False) -> None:
            page.goto(f"{url}/#{path}")
            page.get_by_text(wait_for, exact=False).first.wait_for()
            page.wait_for_timeout(2500)  # tables and charts settle
            close = page.get_by_role("button", name="Close", exact=True)
            if close.count():  # the MLflow Assistant's side panel
                close.first.click()
                page.wait_for_timeout(500)
            if expand:  # the nested trial runs under their parent runs
                for toggle in page.locator("[role=row] button:not([data-testid])").all():
                    if not toggle.inner_text().strip():
                        toggle.click()
                        page.wait_for_timeout(700)
            target = args.out / f"mlflow-{name}.png"
            page.screenshot(path=str(target))
            print(target)

        shot("experiment-runs", f"/experiments/{eid}/runs", parent.info.run_name, expand=True)
        if trials:
            trial = trials[0]
            shot("trial-run", f"/experiments/{eid}/runs/{trial.info.run_id}",
                 trial.info.run_name)  # fmt: skip
        shot("registered-model", f"/models/{model.name}", "champion")
        shot("champion-version", f"/models/{model.name}/versions/{champion.version}",
             "patient_ml.approved_by")  # fmt: skip
        browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
