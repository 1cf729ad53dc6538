"""What every CLI command takes from the global options: who acts and which product DB."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from patient_ml import settings

if TYPE_CHECKING:
    from sqlalchemy import Engine


def actor(args: argparse.Namespace) -> str:
    """`--actor`, else $PATIENT_ML_USER or the OS user (recorded in audit events)."""
    return args.actor or settings.current_user()


def engine(args: argparse.Namespace) -> Engine:
    from patient_ml.db.engine import get_engine

    return get_engine(args.db_url)


@contextlib.contextmanager
def airflow_output_to_stderr() -> Iterator[None]:
    """Everything written to the process's stdout meanwhile goes to stderr instead: Airflow's
    logging (configured when Airflow is imported) writes to the stdout it found, so a command
    that calls Airflow keeps its own stdout for its result (`--json` stays parseable).
    Redirected at the file descriptor, since Airflow's handlers hold their own stream."""
    for stream in (sys.stdout, sys.__stdout__):
        if stream is not None:
            stream.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout descriptor at all: nothing to keep apart
        yield
        return
    os.dup2(2, 1)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.__stdout__):
            if stream is not None:
                stream.flush()
        os.dup2(saved, 1)
        os.close(saved)
