"""Names that show what they are (issue 33): no invisible characters, no look-alike letters.

A name (dataset, model, label, metric, approver, ...) is read by people, in tables, pickers and
audit trails; two names that look the same must be the same name. `name_problem` refuses:

* **invisible characters**: format characters (zero-width space U+200B, word joiner U+2060,
  soft hyphen U+00AD, BOM U+FEFF, tag characters U+E00xx, ...) and the other default-ignorable
  ones (variation selectors, Hangul fillers, combining grapheme joiner). The zero-width
  non-joiner and joiner (U+200C, U+200D) are allowed where a script needs them, as IDNA's
  CONTEXTJ rule says: after a virama, or (the non-joiner) between two Arabic-script letters;
* **spaces other than U+0020** (no-break, thin, ideographic ... spaces look like it);
* **compatibility look-alikes**: a letter or digit that NFKC would replace (fullwidth b
  U+FF42, mathematical bold b U+1D41B, ligature fi U+FB01, micro sign U+00B5 for Greek mu),
  which is another character looking the same;
* **mixed-script words**: a word (a run of letters and marks) whose letters come from scripts
  that do not go together, such as 'brain' with a Cyrillic a (U+0430): one script per word,
  except
  Latin with Han and kana (Japanese), Han with Bopomofo, or Han with Hangul (UTS #39's "highly
  restrictive" level). Different words may use different scripts.

Names are kept in NFC (`identifiers.normalized_name`). ASCII names never reach this module.
"""

from __future__ import annotations

import unicodedata

ZWNJ, ZWJ = "\u200c", "\u200d"
# Default-ignorable code points that are not format characters (category Cf).
_IGNORABLE_RANGES = (
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x115F, 0x1160),  # Hangul choseong / jungseong fillers
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x180B, 0x180F),  # Mongolian free variation selectors
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0xE0100, 0xE01EF),  # variation selectors supplement
)
_HANGUL_COMPATIBILITY_JAMO = (0x3131, 0x318E)  # NFKC maps them, yet they are plain Hangul
_SCRIPT_ALIASES = {"CJK": "HAN", "IDEOGRAPHIC": "HAN", "KANGXI": "HAN"}
# Scripts that may share one word (UTS #39 "highly restrictive"); one script alone always may.
_ALLOWED_MIXES = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)


def is_invisible(char: str) -> bool:
    """A character that shows nothing (or nothing of its own) where it stands."""
    if unicodedata.category(char) == "Cf":
        return True
    code = ord(char)
    return any(low <= code <= high for low, high in _IGNORABLE_RANGES)


def name_problem(value: str) -> str | None:
    """Why the (non-ASCII) name `value` hides characters or passes for another, or None."""
    for i, char in enumerate(value):
        problem = _char_problem(value, i, char)
        if problem:
            return problem
    return _mixed_script_problem(value)


def _char_problem(value: str, i: int, char: str) -> str | None:
    if char.isascii():
        return None
    shown = f"U+{ord(char):04X} {unicodedata.name(char, 'unnamed character')}"
    category = unicodedata.category(char)
    if char in (ZWNJ, ZWJ):
        if _joiner_allowed(value, i, char):
            return None
        return f"contains the invisible {shown} where no script needs it; remove it"
    if is_invisible(char):
        return f"contains the invisible {shown}; remove it"
    if category in ("Cn", "Co"):
        code = shown.split(" ", 1)[0]
        return f"contains {code}, an unassigned or private-use code point; remove it"
    if category.startswith("Z"):
        return f"contains {shown}, which looks like a space; use a plain space (U+0020)"
    if (category.startswith("L") or category == "Nd") and not _is_compatibility_jamo(char):
        plain = unicodedata.normalize("NFKC", char)
        if plain != char:
            return f"contains {shown}, a look-alike of {plain!r}; write {plain!r} instead"
    return None


def _joiner_allowed(value: str, i: int, char: str) -> bool:
    before = value[i - 1] if i > 0 else ""
    after = value[i + 1] if i + 1 < len(value) else ""
    if before and unicodedata.combining(before) == 9:  # after a virama
        return True
    return char == ZWNJ and _script(before) == "ARABIC" == _script(after)


def _is_compatibility_jamo(char: str) -> bool:
    low, high = _HANGUL_COMPATIBILITY_JAMO
    return low <= ord(char) <= high


def _script(char: str) -> str | None:
    """The script of a letter, from its Unicode name (LATIN, CYRILLIC, HAN, ...); None for
    anything else."""
    if not char or not unicodedata.category(char).startswith("L"):
        return None
    word = unicodedata.name(char, "").split(" ", 1)[0]
    word = word.split("-", 1)[0] if word.startswith("KATAKANA-HIRAGANA") else word
    return _SCRIPT_ALIASES.get(word, word) or None


def _mixed_script_problem(value: str) -> str | None:
    scripts: dict[str, str] = {}  # script -> its first letter in the current word
    for char in value + " ":
        category = unicodedata.category(char)
        if category.startswith("L"):
            script = _script(char)
            if script and script != "MODIFIER":  # modifier letters belong to no one script
                scripts.setdefault(script, char)
        elif not (category.startswith("M") or char in (ZWNJ, ZWJ)):
            problem = _word_problem(scripts)
            if problem:
                return problem
            scripts = {}
    return None


def _word_problem(scripts: dict[str, str]) -> str | None:
    found = frozenset(scripts)
    if len(found) <= 1 or any(found <= allowed for allowed in _ALLOWED_MIXES):
        return None
    shown = ", ".join(
        f"{script.title()} (U+{ord(first):04X})" for script, first in sorted(scripts.items())
    )
    return (
        f"mixes scripts in one word ({shown}): a letter of one script that looks like a letter "
        "of another passes one name off as another; write each word in one script"
    )
