"""The one rule for user-chosen names (SAE names, recipe names) that end up in file names.

A name is used verbatim as part of a path (result files ``<backbone>__<sae>.json``, trained-SAE
folders in the cache), so it is never "cleaned": two names that would clean to the same file
(``my sae`` / ``my-sae``) or a name that climbs out of its folder (``../x``) are refused at
startup instead of colliding or escaping after the run has computed everything.

Rule: 1 to 64 characters from ``A-Z a-z 0-9 . _ -``, starting with a letter or digit, with no
``..`` and no ``__`` (the backbone/SAE separator of result file names).  The limit keeps
``<backbone>__<sae>-<digest>`` far below the 255-byte file-name limit of common file systems.
Names of one run must also differ ignoring case, so they stay distinct on case-insensitive
file systems (macOS, Windows).
"""
from __future__ import annotations

import re
from collections.abc import Iterable

MAX_LENGTH = 64
_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
RULE = (f"1-{MAX_LENGTH} characters from A-Z a-z 0-9 . _ -, starting with a letter or digit, "
        "without '..' or '__'")


class InvalidName(ValueError):
    """A user-chosen name breaks the name rule, or two names of one run collide."""


def name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid name, or None when it is."""
    if not isinstance(name, str):
        return f"a name must be a string, got {type(name).__name__}"
    if not name:
        return "the name is empty"
    if len(name) > MAX_LENGTH:
        return f"the name has {len(name)} characters, at most {MAX_LENGTH} are allowed"
    if not _PATTERN.fullmatch(name):
        bad = sorted({c for c in name if not re.fullmatch(r"[A-Za-z0-9._-]", c)})
        if bad:
            return f"the name contains {', '.join(repr(c) for c in bad)}"
        return "the name must start with a letter or a digit"
    if ".." in name:
        return "the name contains '..'"
    if "__" in name:
        return "the name contains '__' (it separates backbone and SAE in result file names)"
    return None


def check_name(name: object, what: str) -> str:
    """``name`` unchanged if it follows the rule, else :class:`InvalidName` naming ``what`` and the fix."""
    problem = name_problem(name)
    if problem is not None:
        raise InvalidName(f"{what} {name!r}: {problem}; names must be {RULE}")
    return name  # type: ignore[return-value]


def check_distinct(names: Iterable[str], what: str) -> None:
    """Refuse a name given twice, or two that differ only in case (they would share files on
    case-insensitive file systems)."""
    seen: dict[str, str] = {}
    for name in names:
        other = seen.get(name.lower())
        seen[name.lower()] = name
        if other is not None:
            how = "is given twice" if other == name else f"and {name!r} differ only in case"
            raise InvalidName(f"{what}: {other!r} {how}; each SAE of a run needs a name of its own "
                              "(names that differ only in case would share files on case-insensitive file systems)")
