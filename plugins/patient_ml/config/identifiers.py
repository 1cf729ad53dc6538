"""Identifiers and free text that reach paths, keys, logs and terminals: one set of rules.

* An **id** (dataset, model, run) is 1-36 ASCII letters, digits, `-`, `_` or `.`, not starting
  with `.` (so never `.`, `..`, `../x`, `a/b`, `/abs`, NUL, ...). Ids name storage keys,
  artifact folders, staging files and DAG ids; `require_safe_id` is called wherever such a path
  is built, so an id that skipped validation (an old row, a hand-edited database) cannot
  escape its folder.
* A **name** is single-line text without control characters (NUL included) and without bidi
  controls (which make a terminal or browser show text in another order than stored); it is
  stored in Unicode NFC, so two spellings of one name (NFC, NFD) are one name. It must not hide
  characters or pass one text off as another (issue 33): no invisible characters (zero-width
  space, word joiner, soft hyphen, BOM, tag and variation characters; a zero-width (non-)joiner
  only where a script needs it), no space other than U+0020, no compatibility look-alikes
  (fullwidth or mathematical letters, ligatures: what NFKC would change), and no word mixing
  scripts the way look-alike attacks do (Latin with Cyrillic or Greek, ...; Latin with Han, kana
  or Hangul is Japanese, Chinese or Korean usage and allowed: UTS #39's "highly restrictive").
* A **text** (descriptions) may hold newlines and tabs, nothing else from the control range.

Importable without pydantic (the DAG factory and the storage layer use it).
"""

from __future__ import annotations

import re
import unicodedata

from patient_ml.config import names
from patient_ml.exceptions import FieldError, InvalidInputError

MAX_ID_LENGTH = 36
ID_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,35}$"
_ID = re.compile(ID_PATTERN)
ID_RULE = "1-36 characters: ASCII letters, digits, '-', '_' or '.', not starting with '.'"

# A FHIR resource id (http://hl7.org/fhir/datatypes.html#id): examples are DocumentReferences.
FHIR_ID_PATTERN = r"^[A-Za-z0-9\-.]{1,64}$"
_FHIR_ID = re.compile(FHIR_ID_PATTERN)

# Bidi embedding/override/isolate controls and marks: shown text would differ from stored text.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def is_safe_id(value: object) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def is_fhir_id(value: object) -> bool:
    return isinstance(value, str) and _FHIR_ID.fullmatch(value) is not None


def fhir_id_problem(value: str) -> str | None:
    """Why `value` is not a FHIR id, naming the offending character (never the value), or None.
    FHIR ids are ASCII, so an id spelled in another Unicode form never names the same resource:
    a non-ASCII id is refused rather than normalised."""
    if _FHIR_ID.fullmatch(value):
        return None
    if not value:
        return "is empty"
    if len(value) > 64:
        return f"is {len(value)} characters long (at most 64)"
    for char in value:
        if not char.isascii():
            return (
                f"holds the non-ASCII character U+{ord(char):04X}; FHIR ids are ASCII, and "
                "another Unicode spelling would name another resource"
            )
        if not (char.isalnum() or char in "-."):
            return f"holds {char!r}"
    return "is not a FHIR id"


FHIR_ID_RULE = "1-64 ASCII letters, digits, '-' or '.'"


def id_problem(value: str) -> str | None:
    """Why `value` is not a safe id, or None."""
    if _ID.fullmatch(value):
        return None
    return f"must be {ID_RULE}"


def text_problem(value: str, *, multiline: bool = False) -> str | None:
    """Why `value` is not acceptable free text (a name when not multiline), or None."""
    for char in value:
        if char in BIDI_CONTROLS:
            return (
                f"contains the bidi control U+{ord(char):04X}, which hides the real text; remove it"
            )
        if unicodedata.category(char) in ("Cc", "Cs") or char in "\u2028\u2029":
            if multiline and char in "\n\t\r":
                continue
            return f"contains the control character U+{ord(char):04X}; remove it"
    if not multiline and not value.isascii():
        return names.name_problem(value)
    return None


def normalized_name(value: str) -> str:
    """The stored form of a name: Unicode NFC (ASCII text is already)."""
    return value if value.isascii() else unicodedata.normalize("NFC", value)


def require_safe_id(value: str, what: str = "id") -> str:
    """`value` unchanged when it is a safe id; raises InvalidInputError otherwise. Call it
    before building a path, storage key or file name from an id."""
    if is_safe_id(value):
        return value
    raise InvalidInputError(
        f"The {what} {shorten(value)!r} is not a valid identifier: it must be {ID_RULE}.",
        [FieldError(what, f"must be {ID_RULE}", shorten(value))],
        fix="recreate the object with a valid id",
    )


def shorten(value: object, limit: int = 80) -> str:
    """`value` as text of at most `limit` characters, control characters escaped: safe to
    print in an error or on a terminal."""
    text = escape_controls(str(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def escape_controls(text: str, keep: str = "") -> str:
    """Control and bidi characters as `\\uXXXX` (except those in `keep`, e.g. newlines): the
    terminal shows what is stored, and cannot be driven by escape sequences in stored text."""
    if text.isprintable() and not BIDI_CONTROLS.intersection(text) and not _hidden(text):
        return text
    out = []
    for char in text:
        if char in keep:
            out.append(char)
        elif char in BIDI_CONTROLS or not char.isprintable() or names.is_invisible(char):
            code = ord(char)
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(char)
    return "".join(out)


def _hidden(text: str) -> bool:
    return not text.isascii() and any(names.is_invisible(char) for char in text)
