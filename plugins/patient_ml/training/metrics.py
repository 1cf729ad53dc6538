"""Pick metrics out of a training log with the model config's `metricDefinitions` regexes.

Tolerant by design: a line that matches nothing, a capture that is not a number, NaN or
infinity is skipped (and counted), never fatal; the log itself is kept whole elsewhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

MAX_LINE = 10_000  # longer lines are matched on their first 10,000 characters


@dataclass
class MetricParser:
    definitions: list[tuple[str, re.Pattern[str]]]
    history: dict[str, list[float]] = field(default_factory=dict)
    skipped: int = 0

    @classmethod
    def from_config(cls, metric_definitions: Iterable[Any]) -> MetricParser:
        defs = []
        for md in metric_definitions:
            name = md["name"] if isinstance(md, dict) else md.name
            regex = md["regex"] if isinstance(md, dict) else md.regex
            defs.append((name, re.compile(regex)))
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
            except (ValueError, IndexError):
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
