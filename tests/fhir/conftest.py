"""Fixtures of the FHIR tests: a real FHIR server (sekmet) and a scripted HTTP server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fhir.scripted_server import ScriptedServer, scripted_server


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    with scripted_server() as server:
        yield server
