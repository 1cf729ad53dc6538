"""The one task of a stand-in DAG whose model config cannot become a pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException


class ConfigErrorOperator(BaseOperator):
    """Fail at once (no retries) with what is wrong with the model config and how to fix it.

    :param message: the config error and its fix.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#ffd6d6"

    def __init__(self, *, message: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.message = message

    def execute(self, context: Context) -> None:
        raise AirflowFailException(self.message)
