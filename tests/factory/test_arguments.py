"""`build_dags`'s keyword arguments (a TypedDict, for DAG files' type checks) are the fields of
`FactoryOptions`: a field added to one and not the other fails here."""

from __future__ import annotations

import dataclasses

from patient_ml.factory.build import FactoryArguments, FactoryOptions


def test_build_dags_arguments_are_the_options_fields() -> None:
    fields = {f.name for f in dataclasses.fields(FactoryOptions)}
    assert set(FactoryArguments.__annotations__) == fields
    assert not FactoryArguments.__required_keys__  # every option has a default
