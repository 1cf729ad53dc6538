"""Metric regexes of model configs (`metricDefinitions[].regex`), run by a linear-time engine.

The platform matches every line of every training log against a config's patterns. Python's
`re` backtracks: `^(a+)+b` takes seconds on a 29-character line and doubles with each character,
so one config could stall the tune stage (issue 33). Patterns are compiled by RE2 (google-re2),
whose matching time is linear in the line whatever the pattern, with a bounded automaton
(`MAX_PATTERN_MEMORY` per pattern). What RE2 cannot run is exactly what needs a backtracking
engine (backreferences, lookaround, atomic groups, possessive quantifiers, conditionals): such
a pattern is refused when the config is saved, with the feature named.

RE2's syntax is Perl's without those features; `\\d`, `\\w` and `\\s` are ASCII only (a metric
value is ASCII digits).
"""

from __future__ import annotations

import re
from typing import Any

import re2

MAX_PATTERN_MEMORY = 2 << 20  # bytes of RE2's compiled program and DFA cache, per pattern
EXAMPLE = "val_loss=([0-9.eE+-]+)"

# Features only a backtracking engine offers, as they appear in a pattern (outside classes).
_BACKTRACKING_FEATURES = (
    (re.compile(r"\\[1-9]|\(\?P="), "a", "backreference"),
    (re.compile(r"\(\?<?[=!]"), "a", "lookahead or lookbehind"),
    (re.compile(r"\(\?>"), "an", "atomic group"),
    (re.compile(r"[*+?}]\+"), "a", "possessive quantifier"),
    (re.compile(r"\(\?\("), "a", "conditional group"),
)


class MetricRegexError(ValueError):
    """A pattern the engine cannot run; the message says why and how to fix it."""


def compile_metric_regex(pattern: str) -> Any:
    """The compiled RE2 pattern; MetricRegexError naming the problem and the fix."""
    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern on stderr
    options.max_mem = MAX_PATTERN_MEMORY
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        raise MetricRegexError(_explain(pattern, exc)) from None


def _explain(pattern: str, exc: Exception) -> str:
    for feature, article, name in _BACKTRACKING_FEATURES:
        if feature.search(pattern):
            return (
                f"uses {article} {name}, which only a backtracking engine runs; metric regexes "
                "run on a linear-time engine (RE2) so that no pattern can stall training: rewrite "
                "it "
                f"without the {name}, e.g. {EXAMPLE!r}"
            )
    detail = exc.args[0] if exc.args else exc
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", "replace")
    return (
        f"does not compile on the linear-time engine RE2 ({str(detail)[:120]}); fix the "
        f"pattern, e.g. {EXAMPLE!r}"
    )
