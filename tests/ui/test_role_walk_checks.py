"""The layout checks of the role walk (tests/e2e/role_walk.py) can fail: in a real browser
(Debian's Chromium through Playwright), a page made of one instance of each problem is flagged
once per problem, and the same page without them is not."""

from __future__ import annotations

import pytest

from include.chromium import MISSING, chromium_installed, launch_chromium
from tests.e2e.role_walk import LAYOUT_PROBLEMS
from tests.ui.test_model_card_page import playwright_api

FINE = """
<p data-testid="fine">A sentence that fits in its box.</p>
<div style="width:120px;overflow:hidden;white-space:nowrap;text-overflow:ellipsis"
     title="run-2026-12-07-a-long-name-with-a-title">run-2026-12-07-a-long-name-with-a-title</div>
<table style="table-layout:fixed;width:400px"><tr><td style="width:150px">
  <p style="margin:0;overflow:hidden;white-space:nowrap;text-overflow:ellipsis"
     title="Flags brain MRI slices that show a tumour (reference client)">Flags brain MRI slices
  that show a tumour (reference client)</p></td><td>Image classification</td></tr></table>
<div style="width:300px;overflow-x:auto;white-space:nowrap">a table that scrolls in its own box,
  wider than the box, which the reader can scroll</div>
<details style="width:300px"><summary>Closed</summary><div style="width:60px">text in a
  closed details element, wrapped in a narrow column but not on screen</div></details>
<span style="position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0,0,0,0)">
  visually hidden text for screen readers only</span>
"""
BAD = {
    "clipped text": '<div data-testid="clip" style="width:80px;overflow:hidden;'
    'white-space:nowrap">a run name cut at the edge</div>',
    "ellipsis": '<div data-testid="dots" style="width:80px;overflow:hidden;white-space:nowrap;'
    'text-overflow:ellipsis">an ellipsis without a title</div>',
    "lines cut": '<div data-testid="clamp" style="width:200px;height:20px;overflow:hidden">'
    "three lines of text in a box of one line, cut below the first line of them</div>",
    "overlapping text": '<div style="position:relative;height:40px"><span data-testid="one" '
    'style="position:absolute;left:0;top:0">first label</span><span data-testid="two" '
    'style="position:absolute;left:10px;top:2px">second label</span></div>',
    "wrapped": '<div data-testid="narrow" style="width:60px">2026-12-07 16:25:03 UTC to '
    "2026-12-07 16:40:11 UTC</div>",
    "sideways": '<div style="width:3000px">a page wider than the window</div>',
}
FLAGS = {
    "clipped text": "clipped text",
    "ellipsis": "clipped text",
    "lines cut": "clipped text",
    "overlapping text": "overlapping text",
    "wrapped": "text wrapped to unreadable",
    "sideways": "the page scrolls sideways",
}


def test_each_layout_check_flags_its_problem_once() -> None:
    if not chromium_installed():
        pytest.skip(MISSING)
    with playwright_api.sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_content(f"<body>{FINE}</body>")
        assert page.evaluate(LAYOUT_PROBLEMS) == []
        for problem, html in BAD.items():
            page.set_content(f"<body>{FINE}{html}</body>")
            found = page.evaluate(LAYOUT_PROBLEMS)
            assert len(found) == 1, (problem, found)
            assert found[0].startswith(FLAGS[problem]), (problem, found)
        browser.close()
