"""Pick metrics out of a training log with the model config's `metricDefinitions` regexes.

Tolerant by design: a line that matches nothing, a capture that is not a number, NaN or
infinity is skipped (and counted), never fatal; the log itself is kept whole elsewhere.

Bounded by design (issue 33): the patterns run on RE2, a linear-time engine
(`patient_ml.config.metric_regex`), over at most MAX_LINE characters of a line, so no pattern
and no line can stall a trial. A stored pattern RE2 cannot run (saved around the config
checks, or by an older version) raises MetricDefinitionError before the first trial starts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from patient_ml.config.identifiers import shorten
from patient_ml.config.metric_regex import MetricRegexError, compile_metric_regex
from patient_ml.exceptions import PatientMLError

MAX_LINE = 10_000  # longer lines are matched on their first 10,000 characters


class MetricDefinitionError(PatientMLError):
    """A stored metric regex the linear-time engine cannot run: the tune stage fails at once."""

    exit_code = 3
    http_status = 422


@dataclass
class MetricParser:
    definitions: list[tuple[str, Any]]  # (metric name, compiled RE2 pattern)
    history: dict[str, list[float]] = field(default_factory=dict)
    skipped: int = 0

    @classmethod
    def from_config(cls, metric_definitions: Iterable[Any]) -> MetricParser:
        defs = []
        for i, md in enumerate(metric_definitions):
            name = md["name"] if isinstance(md, dict) else md.name
            regex = md["regex"] if isinstance(md, dict) else md.regex
            try:
                defs.append((name, compile_metric_regex(regex)))
            except MetricRegexError as exc:
                raise MetricDefinitionError(
                    f"The model config's trainingApproach.metricDefinitions[{i}].regex "
                    f"{shorten(regex)!r} cannot be run: {exc}.",
                    fix="update the model config with such a pattern (patient-ml models "
                    "update, or the REST API); a saved config is checked the same way",
                ) from None
        return cls(defs)

    def feed(self, line: str) -> list[tuple[str, float]]:
        """Metrics found in one log line, in definition order."""
        text = line[:MAX_LINE]
        found = []
        for name, pattern in self.definitions:
            match = pattern.search(text)
            if not match:
                continue
            try:
                value = float(match.group(1))
            except (ValueError, IndexError, TypeError):  # TypeError: an optional group unmatched
                self.skipped += 1
                continue
            if not math.isfinite(value):
                self.skipped += 1
                continue
            self.history.setdefault(name, []).append(value)
            found.append((name, value))
        return found

    def last(self) -> dict[str, float]:
        return {name: values[-1] for name, values in self.history.items() if values}

    def never_matched(self) -> list[str]:
        return [name for name, _ in self.definitions if not self.history.get(name)]
