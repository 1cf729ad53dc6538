"""Each role's walk through the Patient ML pages inside Airflow's UI (issue 31, "Done when"), in a
real browser, shared by the simple auth manager's walk (tests/e2e/test_web_ui.py) and the FAB
auth manager's (tests/e2e/test_fab_roles.py).

A user signs in through Airflow's own login page (the simple auth manager's form, or FAB's), then,
at 1280 x 900 and at 1920 x 1080, opens the pages the role may see: the Models list, the model's
page and each of its tabs, the run's page and each of its tabs, the labeling page (the
clinician), Airflow's Required Actions (who may decide). On each page, measured in the page:

- no page-wide horizontal overflow (Airflow's window and the plugin's frame; the checks below
  only in the plugin's frame: the rest of Airflow's page is Airflow's own);
- no clipped text: an element with text whose content is wider (or taller) than its box while its
  overflow is hidden or clipped, or its text ends in an ellipsis, unless the full text is its
  title (or an ancestor's, up to 3 levels);
- no overlapping text: the line boxes of two text nodes of the page that overlap where they
  are on screen (a box cut by an ancestor that clips its overflow counts only within it);
- no text wrapped to unreadable: at least 4 lines in a column narrower than 120 px;
- the tables' key cells on one line (run names) or two (started / ended), as
  tests/ui/test_pages_layout.py expects on the product's own app.

What each role may do is asserted from what the page says (docs/roles.md): who may decide sees
the decision form with Approve enabled; anyone else sees who may decide and why not, before
typing anything, and no enabled Approve; the viewer's Start run is disabled; the clinician's
labeling page offers Save. tests/ui/test_role_walk_checks.py shows each check failing on a page
made to fail it.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from include.airflow_stack import AirflowStack
from include.chromium import CHROMIUM, MISSING, chromium_installed, launch_chromium
from include.demo_users import DEMO_USERS
from tests.conftest import REPO_ROOT
from tests.ui.test_pages_layout import LINES

FRAME = "iframe[title='Patient ML']"
SCREENSHOTS = Path(os.environ.get("PATIENT_ML_SCREENSHOTS", REPO_ROOT / "test-screenshots"))
VIEWPORTS = ((1280, 900), (1920, 1080))
MODEL_TABS = (
    "Runs",
    "Metrics",
    "Curation report",
    "Deployments",
    "Monitoring",
    "Batch scoring",
    "Configuration",
    "Dataset",
    "Examples",
)
RUN_TABS = ("Overview", "Trials", "Evaluation", "Model card", "Logs")

# The layout problems of a document, as lines of text (empty: none). Run in the page's window
# and in the plugin's frame.
LAYOUT_PROBLEMS = (
    """() => {
  const problems = [];
  const skip = "script,style,noscript,select,option,textarea,svg,[aria-hidden=true]";
  const words = (s) => (s || "").replace(/\\s+/g, " ").trim();
  const name = (el) => {
    const id = el.closest("[data-testid]")?.getAttribute("data-testid");
    const text = words(el.textContent).slice(0, 60);
    return `<${el.tagName.toLowerCase()}${id ? ` in ${id}` : ""}> "${text}"`;
  };
  const shown = (el) => {
    const r = el.getBoundingClientRect();
    const opts = { visibilityProperty: true, opacityProperty: true, contentVisibilityAuto: true };
    return r.width > 1 && r.height > 1 && el.checkVisibility(opts);
  };
  const titled = (el, text) => {
    for (let e = el, i = 0; e && i < 4; e = e.parentElement, i++) {
      const t = words(e.getAttribute("title"));
      if (t && (t.includes(text) || text.includes(t))) return true;
    }
    return false;
  };
  const doc = document.documentElement;
  if (doc.scrollWidth > window.innerWidth)
    problems.push(`the page scrolls sideways: ${doc.scrollWidth} > ${window.innerWidth} px`);
  const clips = (v) => v === "hidden" || v === "clip";
  for (const el of document.body.querySelectorAll("*")) {
    if (el.closest(skip) || !shown(el)) continue;
    const text = words(el.textContent);
    if (!text) continue;
    const s = getComputedStyle(el);
    const wide = el.scrollWidth > el.clientWidth + 1
      && (clips(s.overflowX) || s.textOverflow === "ellipsis");
    const tall = el.scrollHeight > el.clientHeight + 2 && clips(s.overflowY)
      && el.clientHeight > 0;
    if ((wide || tall) && !titled(el, text))
      problems.push(`clipped text (${el.scrollWidth}x${el.scrollHeight} in `
        + `${el.clientWidth}x${el.clientHeight}): ${name(el)}`);
  }
  // what of a text's line boxes is on screen: cut by every ancestor that clips its overflow
  // (an ellipsis keeps the hidden rest of the line inside the cell, invisible)
  const visible = (r, el) => {
    let { left, right, top, bottom } = r;
    for (let e = el; e && e !== document.body; e = e.parentElement) {
      const c = getComputedStyle(e);
      if (!clips(c.overflowX) && !clips(c.overflowY)) continue;
      const b = e.getBoundingClientRect();
      if (clips(c.overflowX)) { left = Math.max(left, b.left); right = Math.min(right, b.right); }
      if (clips(c.overflowY)) { top = Math.max(top, b.top); bottom = Math.min(bottom, b.bottom); }
    }
    return { left, right, top, bottom, width: right - left, height: bottom - top };
  };
  const boxes = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!words(node.textContent) || !el || el.closest(skip) || !shown(el)) continue;
    const range = document.createRange();
    range.selectNodeContents(node);
    for (const rect of range.getClientRects()) {
      const r = visible(rect, el);
      if (r.width > 2 && r.height > 2) boxes.push({ r, el });
    }
  }
  const reported = new Set();
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i], b = boxes[j];
      if (a.el === b.el) continue;
      const x = Math.min(a.r.right, b.r.right) - Math.max(a.r.left, b.r.left);
      const y = Math.min(a.r.bottom, b.r.bottom) - Math.max(a.r.top, b.r.top);
      if (x > 2 && y > Math.min(a.r.height, b.r.height) / 2) {
        const key = name(a.el) + name(b.el);
        if (!reported.has(key)) problems.push(`overlapping text: ${name(a.el)} and ${name(b.el)}`);
        reported.add(key);
      }
    }
  }
  const lines = """
    + LINES
    + """;
  for (const el of document.body.querySelectorAll("*")) {
    if (el.closest(skip) || !shown(el)) continue;
    const own = words([...el.childNodes].filter((n) => n.nodeType === 3)
      .map((n) => n.textContent).join(" "));
    if (own.length < 12) continue;
    const width = el.getBoundingClientRect().width;
    if (width < 120 && lines(el) >= 4)
      problems.push(`text wrapped to unreadable (${lines(el)} lines in ${Math.round(width)} px):`
        + ` ${name(el)}`);
  }
  return problems;
}"""
)


@contextlib.contextmanager
def chromium() -> Iterator[tuple[Any, Any]]:
    """Debian's Chromium driven by Playwright (include/chromium.py) and Playwright's `expect`;
    skips (fails in CI) without them."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not chromium_installed():
        if os.environ.get("CI") or os.environ.get("PATIENT_ML_REQUIRE_DOCKER") == "1":
            pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver")
        pytest.skip(MISSING)
    with sync_api.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            yield browser, sync_api.expect
        finally:
            browser.close()


@dataclass
class Walk:
    """One deployment's walk: its Airflow (url, passwords), the model, the run waiting for a
    decision and who may decide it."""

    url: str
    password: Callable[[str], str]
    model: str
    dag_id: str
    dag_run_id: str
    slug: str
    deciders: frozenset[str]
    login_path: str = "/"
    problems: list[str] = field(default_factory=list)
    pages: list[str] = field(default_factory=list)


def sign_in(browser: Any, walk: Walk, user: str) -> Any:
    """A page of a new browser context, signed in through Airflow's own login page (the simple
    auth manager's, or FAB's: both have the `username` and `password` fields)."""
    ctx = browser.new_context(viewport={"width": VIEWPORTS[0][0], "height": VIEWPORTS[0][1]})
    page = ctx.new_page()
    page.goto(f"{walk.url}{walk.login_path}")
    page.locator("input[name=username]").fill(user)
    page.locator("input[name=password]").fill(walk.password(user))
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: "login" not in url, timeout=60_000)
    page.wait_for_load_state("load")
    assert any(c["name"] == "_token" for c in ctx.cookies()), f"{user} is not signed in"
    return page


def check_layout(page: Any, where: str, walk: Walk) -> None:
    """The layout problems of the plugin's frame (when shown) and whether Airflow's window
    scrolls sideways (the rest of Airflow's own page is Airflow's), noted in `walk.problems`
    with `where`."""
    found = [p for p in page.evaluate(LAYOUT_PROBLEMS) if p.startswith("the page scrolls")]
    frame = page.frame_locator(FRAME)
    if page.locator(FRAME).count():
        found += frame.locator("html").evaluate(f"(_) => ({LAYOUT_PROBLEMS})()")
    walk.pages.append(where)
    walk.problems.extend(f"{where}: {p}" for p in found)


def _settled(ui: Any, expect: Any) -> None:
    """Until the frame shows no spinner and no "Loading …" text."""
    expect(ui.locator(".chakra-spinner")).to_have_count(0)
    expect(ui.get_by_text(re.compile(r"^Loading .*…$"))).to_have_count(0)


def _lines(locator: Any) -> list[int]:
    return [int(n) for n in locator.evaluate_all(f"els => els.map({LINES})")]


def walk_role(browser: Any, walk: Walk, user: str, expect: Any) -> None:
    """`user`'s walk at each viewport; layout problems go to `walk.problems`, a role's truth
    that does not hold fails at once."""
    page = sign_in(browser, walk, user)
    ui = page.frame_locator(FRAME)
    decides = user in walk.deciders
    for width, height in VIEWPORTS:
        page.set_viewport_size({"width": width, "height": height})
        at = f"{user} at {width}x{height}"

        # The Models list ("Patient ML" in Airflow's navigation).
        page.goto(f"{walk.url}/plugin/patient-ml")
        # a new context's first page loads Airflow's UI and the plugin's (as test_web_ui: 60 s)
        row = ui.locator("[data-testid=model-row]", has_text=walk.model)
        expect(row).to_have_count(1, timeout=60_000)
        _settled(ui, expect)
        check_layout(page, f"{at}, Models", walk)

        # The model's page (the DAG's "Patient ML" tab) and each of its tabs.
        page.goto(f"{walk.url}/dags/{walk.dag_id}/plugin/patient-ml-model")
        expect(ui.get_by_test_id("model-title")).to_have_text(walk.model, timeout=60_000)
        start = ui.get_by_role("button", name="Start run")
        if user == "viewer":
            expect(start).to_be_disabled()
            assert "viewer may not start runs" in (start.get_attribute("title") or "")
        else:
            expect(start).to_be_enabled()
        for tab in MODEL_TABS:
            ui.get_by_role("tab", name=tab, exact=True).click()
            _settled(ui, expect)
            if tab == "Runs":
                names = ui.locator("[data-testid=run-name] a")
                expect(names.first).to_be_visible()
                assert set(_lines(names)) == {1}, f"{at}: a run name wraps"
                assert max(_lines(ui.get_by_test_id("run-times"))) <= 2, f"{at}: dates wrap"
            check_layout(page, f"{at}, model tab {tab}", walk)

        # The run's page (the DAG run's "Patient ML" tab): the decision, and each tab.
        page.goto(f"{walk.url}/dags/{walk.dag_id}/runs/{walk.dag_run_id}/plugin/patient-ml-run")
        expect(ui.get_by_test_id("run-title")).to_have_text(f"Run {walk.slug}", timeout=60_000)
        form = ui.get_by_test_id("approval-form")
        expect(form).to_be_visible()
        approve = form.get_by_role("button", name="Approve")
        if decides:
            expect(ui.get_by_test_id("approval-who")).to_have_count(0)
            expect(form.get_by_role("button", name="Reject")).to_be_enabled()
            if approve.inner_text() == "Approve":  # else first the override's justification
                expect(approve).to_be_enabled()
            expect(form.get_by_role("textbox")).to_be_editable()
        else:  # who may decide and why not, before anything is typed; no enabled control
            who = ui.get_by_test_id("approval-who")
            expect(who).to_be_visible()
            for approver in sorted(walk.deciders):
                expect(ui.get_by_test_id("approval-approvers")).to_contain_text(approver)
            expect(ui.get_by_test_id("approval-reason")).to_contain_text(user)
            expect(approve).to_be_disabled()
            expect(form.get_by_role("button", name="Reject")).to_be_disabled()
        for tab in RUN_TABS:
            ui.get_by_role("tab", name=tab, exact=True).click()
            _settled(ui, expect)
            check_layout(page, f"{at}, run tab {tab}", walk)

        if user == "clinician":  # the labeling page: an example of the model's dataset
            page.goto(f"{walk.url}/dags/{walk.dag_id}/plugin/patient-ml-model")
            ui.get_by_role("tab", name="Examples", exact=True).click()
            _settled(ui, expect)
            if ui.get_by_test_id("example-tile").count() == 0:
                ui.get_by_test_id("status-all").click()
            ui.get_by_test_id("example-tile").first.click()
            panel = ui.get_by_test_id("label-panel")
            expect(panel).to_be_visible()
            expect(panel.get_by_test_id("save-confirmed")).to_be_enabled()
            panel.get_by_text("Keyboard shortcuts", exact=True).click()  # open, then measured
            _settled(ui, expect)
            check_layout(page, f"{at}, labeling", walk)

        if decides:  # Airflow's Required Actions: the run's request, offered to this user
            page.goto(f"{walk.url}/required_actions")
            expect(page.get_by_text(walk.dag_id).first).to_be_visible(timeout=60_000)
            check_layout(page, f"{at}, Required Actions", walk)
    page.context.close()


def walk_all(
    browser: Any,
    expect: Any,
    stack: AirflowStack,
    *,
    model: str,
    dag_id: str,
    dag_run_id: str,
    slug: str,
    deciders: Iterable[str],
) -> None:
    """Every demo user's walk (include/demo_users.py), signed in with `stack`'s passwords, while
    the model's run (`dag_run_id` of `dag_id`, `slug`) waits for a decision by `deciders`; then
    every layout problem found, all at once."""
    walk = Walk(
        url=stack.url,
        password=stack.password,
        model=model,
        dag_id=dag_id,
        dag_run_id=dag_run_id,
        slug=slug,
        deciders=frozenset(deciders),
    )
    for user in (u.name for u in DEMO_USERS):
        try:
            walk_role(browser, walk, user, expect)
        except Exception:  # what the page showed, for the failure's report
            for context in browser.contexts:
                for page in context.pages:
                    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(SCREENSHOTS / f"role-walk-failed-{user}.png"))
                    shown = page.frame_locator(FRAME).locator("body").inner_text(timeout=5_000)
                    print(f"{user}'s page {page.url} showed:\n{shown[:2000]}")
            raise
    assert not walk.problems, "\n".join(walk.problems)
