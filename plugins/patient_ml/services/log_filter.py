"""The `filter` of the logs API: the plain-text subset of AWS CloudWatch Logs filter patterns.

The reference API passes its filter to CloudWatch, so clients send CloudWatch syntax. This
module implements the part that applies to plain log lines, with CloudWatch's meaning:

- ``""`` (empty or blank): every event.
- ``ERROR Exception``: every term must appear (case-sensitive substring match).
- ``"val loss"``: a double-quoted phrase is one term (``\\"`` and ``\\\\`` escape inside it).
- ``?ERROR ?WARN``: an event matches if *any* ``?`` term appears. CloudWatch does not allow
  mixing ``?`` terms with plain terms, so neither do we (422).
- ``-term`` / ``-"a phrase"``: the event must not contain it. Accepted after at least one
  positive term (e.g. ``ERROR -Throttling``, ``"" -DEBUG`` for "everything but").

JSON (``{ $.x = 1 }``), space-delimited (``[a, b]``) and regex (``%re%``) patterns are refused
with a 422 naming `filter` and what is supported, rather than silently matching nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from patient_ml.exceptions import FieldError, InvalidInputError

SUPPORTED = (
    'plain-text terms: `a b` (all), `"a phrase"`, `?a ?b` (any), `a -b` (exclude); '
    "an empty filter matches every event"
)


class LogQueryError(InvalidInputError):
    """A query parameter of the logs API was refused: 422 with the field, value and fix."""

    def __init__(self, field: str, message: str, value: object, *, fix: str) -> None:
        super().__init__(
            f"Invalid {field}: {message}.", [FieldError(field, message, value)], fix=fix
        )


@dataclass(frozen=True)
class LogFilter:
    """A parsed filter; `matches(text)` decides one event."""

    all_of: tuple[str, ...] = ()
    any_of: tuple[str, ...] = ()
    none_of: tuple[str, ...] = ()

    def matches(self, text: str) -> bool:
        if any(term in text for term in self.none_of):
            return False
        if self.any_of and not any(term in text for term in self.any_of):
            return False
        return all(term in text for term in self.all_of)


def parse_filter(pattern: str | None) -> LogFilter:
    """Parse a CloudWatch plain-text filter pattern; LogQueryError (field `filter`) if not."""
    text = (pattern or "").strip()
    if not text:
        return LogFilter()
    kind = {"{": "JSON", "[": "space-delimited", "%": "regular-expression"}.get(text[0])
    if kind:
        raise _error(pattern, f"{kind} filter patterns are not supported here")
    all_of: list[str] = []
    any_of: list[str] = []
    none_of: list[str] = []
    for operator, term in _terms(text, pattern or ""):
        if operator == "-":
            if not all_of and not any_of:
                raise _error(
                    pattern,
                    f"the exclusion -{_shown(term)} comes before any term to match",
                    fix=f'put a term before it, e.g. `"" -{_shown(term)}` for every event '
                    "without it",
                )
            none_of.append(term)
        elif operator == "?":
            any_of.append(term)
        else:
            all_of.append(term)
        if all_of and any_of:
            raise _error(
                pattern,
                "?terms (any of) cannot be mixed with plain terms (all of), as in CloudWatch",
                fix="use only ?terms or only plain terms (plus -exclusions)",
            )
    return LogFilter(tuple(all_of), tuple(any_of), tuple(none_of))


def _terms(text: str, pattern: str) -> list[tuple[str, str]]:
    """(operator: '' | '?' | '-', term) for each space-separated term of `text`."""
    terms: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        operator = text[i] if text[i] in "?-" else ""
        i += len(operator)
        if i < n and text[i] == '"':
            term, i = _phrase(text, i + 1, pattern)
            if i < n and not text[i].isspace():
                raise _error(pattern, f"a quoted phrase must be followed by a space: {text[i:]!r}")
        else:
            start = i
            while i < n and not text[i].isspace():
                i += 1
            term = text[start:i]
            if not term:
                raise _error(pattern, f"{operator!r} must be followed by a term")
            if '"' in term:
                raise _error(pattern, f"the term {term!r} has a quote inside it")
        terms.append((operator, term))
    return terms


def _phrase(text: str, i: int, pattern: str) -> tuple[str, int]:
    """The phrase starting after an opening quote at `i - 1`, and the index after its end."""
    out: list[str] = []
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
            out.append(text[i + 1])
            i += 2
        elif char == '"':
            return "".join(out), i + 1
        else:
            out.append(char)
            i += 1
    raise _error(pattern, "a quoted phrase is not closed")


def _shown(term: str) -> str:
    return f'"{term}"' if not term or any(c.isspace() for c in term) else term


def _error(pattern: str | None, message: str, *, fix: str | None = None) -> LogQueryError:
    return LogQueryError("filter", message, pattern, fix=fix or f"use {SUPPORTED}")
