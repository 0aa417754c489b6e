"""Text a member writes (subjects, bodies, names, headlines): what shows, and what may not be
in it at all."""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from inmail.domain.errors import DomainError, ErrorCode, Reason

_INVISIBLE: Final = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me"})
"""Unicode categories that show nothing on their own: controls, format characters (zero-width
spaces, direction marks), separators, and marks (accents, variation selectors) with no letter
to sit on."""

_BLANK_LETTERS: Final = frozenset("\u115f\u1160\u3164\uffa0\u2800")
"""Letters and symbols drawn as nothing: the Hangul fillers and the blank Braille pattern."""

_CONTROLS: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""Control characters (Unicode category Cc), matched at C speed."""
_CONTROLS_BUT_LINES: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
"""Control characters but line breaks and tabs, which a body may hold."""


def shows_something(text: str) -> bool:
    """Whether any character of `text` is drawn as something."""
    return any(c not in _BLANK_LETTERS and unicodedata.category(c) not in _INVISIBLE for c in text)


def refuse_control_characters(text: str, field: str, *, lines: bool = False) -> None:
    """Refuse text holding a control character (a NUL, an escape): none belongs in what a
    member writes. With `lines`, line breaks and tabs are allowed (a body)."""
    found = (_CONTROLS_BUT_LINES if lines else _CONTROLS).search(text)
    if found is not None:
        raise DomainError(
            ErrorCode.INVALID_INPUT,
            Reason.CONTROL_CHARACTER,
            field,
            codepoint=ord(found.group()),
        )
