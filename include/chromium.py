"""Debian's Chromium (apt, never `playwright install`) as Playwright drives it here: one path and
one set of launch flags for the screenshots of include/, benchmarks/ui_lists.py and the browser
tests (tests/ui, tests/e2e).

PATIENT_ML_CHROMIUM names another Chromium binary.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("PATIENT_ML_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MISSING = f"{CHROMIUM} is missing (apt-get install -y chromium)"


def chromium_installed() -> bool:
    return Path(CHROMIUM).exists()


def launch_chromium(playwright: Any) -> Any:
    """A headless Chromium (Playwright's Browser) of a started `sync_playwright()`."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
