"""Screenshots of every Patient ML page against a running Airflow (e.g. the one `make demo`
leaves running), in Debian's Chromium at 1,280 px, light and dark, to look at the pages with
real data:

    .venv/bin/python include/ui_screenshots.py --url http://127.0.0.1:PORT \\
        --password-file var/demo/airflow/passwords.json [--out test-screenshots/demo]

It signs in through Airflow's login form (user admin by default), opens the Models table from
the navigation, the first model whose DAG it finds (or --model NAME), each of its tabs, its
newest runs and each run tab, and saves one PNG per page and colour mode. It also checks the
keyboard: Tab from the page's start must reach a focusable control inside the Patient ML frame.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from include.chromium import launch_chromium

FRAME = "iframe[title='Patient ML']"
MODEL_TABS = [
    "Runs",
    "Metrics",
    "Curation report",
    "Deployments",
    "Monitoring",
    "Batch scoring",
    "Configuration",
]
RUN_TABS = ["Overview", "Trials", "Evaluation", "Model card", "Logs"]


def _token(url: str, user: str, password: str) -> str:
    got = requests.post(f"{url}/auth/token", json={"username": user, "password": password},
                        timeout=30)  # fmt: skip
    got.raise_for_status()
    return str(got.json()["access_token"])


def _get(url: str, token: str, path: str) -> Any:
    got = requests.get(f"{url}/v1/patient-ml{path}", headers={"Authorization": f"Bearer {token}"},
                       params={"view": "extended"}, timeout=60)  # fmt: skip
    got.raise_for_status()
    return got.json()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="Airflow's URL")
    ap.add_argument("--user", default="admin")
    ap.add_argument("--password", help="the user's password")
    ap.add_argument("--password-file", type=Path, help="JSON {user: password} (the demo's)")
    ap.add_argument("--model", help="model name (default: the first one)")
    ap.add_argument("--runs", type=int, default=2, help="newest runs to show (default 2)")
    ap.add_argument("--out", type=Path, default=Path("test-screenshots/demo"))
    ap.add_argument("--height", type=int, default=1000)
    args = ap.parse_args()
    password = args.password or json.loads(args.password_file.read_text())[args.user]
    url = args.url.rstrip("/")
    token = _token(url, args.user, password)
    models = _get(url, token, "/model-summaries")["modelSummaries"]
    model = next(m for m in models if not args.model or m["name"] == args.model)
    runs = _get(url, token, f"/models/{model['id']}/runs")["runs"][: args.runs]
    args.out.mkdir(parents=True, exist_ok=True)

    from playwright.sync_api import sync_playwright

    shots: list[Path] = []
    with sync_playwright() as p:
        browser = launch_chromium(p)
        for mode in ("light", "dark"):
            ctx = browser.new_context(viewport={"width": 1280, "height": args.height},
                                      color_scheme=mode)  # fmt: skip
            page = ctx.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{url}/")
            page.locator("input[name=username]").fill(args.user)
            page.locator("input[name=password]").fill(password)
            page.keyboard.press("Enter")
            page.get_by_role("link", name="Patient ML").click()
            page.wait_for_url("**/plugin/patient-ml**")
            ui = page.frame_locator(FRAME)
            ui.locator("[data-testid=model-row]").first.wait_for()

            def shot(name: str, page: Any = page, mode: str = mode) -> None:
                page.wait_for_timeout(1200)  # charts animate in
                target = args.out / f"{name}-{mode}.png"
                page.screenshot(path=str(target))
                shots.append(target)

            shot("models-table")
            if mode == "light":  # keyboard: Tab reaches the frame's controls
                for _ in range(40):
                    page.keyboard.press("Tab")
                    inside = page.evaluate(
                        "document.activeElement && document.activeElement.tagName === 'IFRAME'"
                    )
                    if inside:
                        break
                print(f"keyboard: Tab reaches the Patient ML frame: {bool(inside)}")
            dag = model["dagId"]
            page.goto(f"{url}/dags/{dag}/plugin/patient-ml-model")
            ui.get_by_test_id("model-title").wait_for()
            for tab in MODEL_TABS:
                ui.get_by_role("tab", name=tab).click()
                shot(f"model-{tab.lower().replace(' ', '-')}")
                if tab == "Configuration":  # the nested settings further down
                    ui.get_by_text("Search space", exact=True).scroll_into_view_if_needed()
                    shot("model-configuration-search-space")
            for run in runs:
                dag_run = (run.get("airflow") or {}).get("runId")
                if dag_run:
                    page.goto(f"{url}/dags/{dag}/runs/{dag_run}/plugin/patient-ml-run")
                else:
                    page.goto(f"{url}/plugin/patient-ml?view=run&modelId={model['id']}"
                              f"&runId={run['id']}")  # fmt: skip
                ui.get_by_test_id("run-title").wait_for()
                for tab in RUN_TABS:
                    ui.get_by_role("tab", name=tab).click()
                    if tab == "Logs":
                        ui.get_by_label("Log filter").fill("trial")
                        ui.get_by_role("button", name="Filter").click()
                    shot(f"run-{run['slug']}-{tab.lower().replace(' ', '-')}")
                    if tab == "Overview":  # the sections below the fold, one shot each
                        for section in ("operating-point", "gate", "subgroups"):
                            found = ui.get_by_test_id(section)
                            if found.count():
                                found.scroll_into_view_if_needed()
                                shot(f"run-{run['slug']}-{section}")
                    if tab == "Evaluation":  # the failure gallery, below the metrics
                        gallery = ui.get_by_test_id("failure-gallery")
                        if gallery.count():
                            gallery.evaluate("e => e.scrollIntoView({block: 'start'})")
                            shot(f"run-{run['slug']}-failure-gallery")
            ctx.close()
        browser.close()
    for target in shots:
        print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
