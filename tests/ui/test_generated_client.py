"""The web UI's generated API client is not stale: the OpenAPI document written from the FastAPI
app now, and the client generated from it, equal what is committed (ui/openapi.json,
ui/src/client/). Fix a failure with `make ui-client` and commit the result."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from include.write_openapi import DEFAULT_OUT, ROOT, openapi_document, render

UI = ROOT / "ui"
CLIENT = UI / "src" / "client"
GENERATOR = UI / "node_modules" / ".bin" / "openapi-ts"
FIX = "run `make ui-client` and commit ui/openapi.json and ui/src/client"


def _files(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_openapi_document_is_current() -> None:
    assert DEFAULT_OUT.read_text(encoding="utf-8") == render(openapi_document()), (
        f"ui/openapi.json differs from the API's document: {FIX}"
    )


def test_the_generated_client_is_current(tmp_path: Path) -> None:
    if not GENERATOR.exists():
        pytest.skip("ui/node_modules is missing (`make ui-test` or `cd ui && npm ci` installs it)")
    npm = shutil.which("npm")
    assert npm, "npm is not on PATH"
    document = tmp_path / "openapi.json"
    document.write_text(render(openapi_document()), encoding="utf-8")
    out = tmp_path / "client"
    env = {**os.environ, "PATIENT_ML_OPENAPI": str(document), "PATIENT_ML_CLIENT_OUT": str(out)}
    done = subprocess.run(
        [npm, "run", "--silent", "generate-client"],
        cwd=UI,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    fresh, committed = _files(out), _files(CLIENT)
    assert sorted(fresh) == sorted(committed), f"ui/src/client has other files: {FIX}"
    stale = [name for name in fresh if not filecmp.cmp(fresh[name], committed[name], shallow=False)]
    assert not stale, f"ui/src/client is stale ({', '.join(stale)}): {FIX}"
