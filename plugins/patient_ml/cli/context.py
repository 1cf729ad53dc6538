"""What every CLI command takes from the global options: who acts and which product DB."""

from __future__ import annotations

import argparse
from typing import Any

from patient_ml import settings


def actor(args: argparse.Namespace) -> str:
    """`--actor`, else $PATIENT_ML_USER or the OS user (recorded in audit events)."""
    return args.actor or settings.current_user()


def engine(args: argparse.Namespace) -> Any:
    from patient_ml.db.engine import get_engine

    return get_engine(args.db_url)
