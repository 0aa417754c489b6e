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

_NOT_SPACING: Final = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]")
"""Control characters (Unicode category Cc) that space nothing out: a NUL, a bell, an escape.
Matched at C speed."""
_DIRECTION_CONTROLS: Final = re.compile(r"[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""The characters that set the direction of the text around them: the marks, embeddings,
overrides and isolates (`RIGHT-TO-LEFT OVERRIDE` shows what follows it reversed)."""
_CONTROLS: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""Every control character (Unicode category Cc)."""
_SPACING: Final = re.compile(r"[\t\n\r\x0b\x0c\x85]+")
"""Control characters that break a line or space it out: tab, line feed, carriage return,
vertical tab (a line break pasted from a word processor), form feed, next line."""


def shows_something(text: str) -> bool:
    """Whether any character of `text` is drawn as something."""
    return any(c not in _BLANK_LETTERS and unicodedata.category(c) not in _INVISIBLE for c in text)


def without_controls(text: str, field: str, *, lines: bool = False) -> str:
    """`text` as a member may write it: a control character that spaces nothing out (a NUL, an
    escape) is refused; line breaks and tabs are kept where `lines` allows them (a body), and
    elsewhere (a subject, a name) each run of them is one space."""
    found = _NOT_SPACING.search(text)
    if found is not None:
        code = ord(found.group())
        raise DomainError(ErrorCode.INVALID_INPUT, Reason.CONTROL_CHARACTER, field, codepoint=code)
    return text if lines else _SPACING.sub(" ", text)


def without_any_controls(text: str, field: str) -> str:
    """`text` refused if it holds any control character, tab and line break included: for a
    token nobody reads (an idempotency key), where turning one into a space would make two
    keys one."""
    found = _CONTROLS.search(text)
    if found is not None:
        code = ord(found.group())
        raise DomainError(ErrorCode.INVALID_INPUT, Reason.CONTROL_CHARACTER, field, codepoint=code)
    return text


def without_direction_controls(text: str, field: str) -> str:
    """`text`, refused if it holds a character that sets the direction of the text: for a short
    label shown beside other text (a card's brand beside its last four digits), which such a
    character could show in another order. Right-to-left letters need none of them."""
    found = _DIRECTION_CONTROLS.search(text)
    if found is not None:
        code = ord(found.group())
        raise DomainError(ErrorCode.INVALID_INPUT, Reason.DIRECTION_CONTROL, field, codepoint=code)
    return text
