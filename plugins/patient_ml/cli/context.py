"""What every CLI command takes from the global options: who acts and which product DB."""

from __future__ import annotations

import argparse
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
