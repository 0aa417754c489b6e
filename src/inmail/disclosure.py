"""What the API tells a stranger about its schema beyond what it asked.

graphql-core words some errors with guesses from the schema ("Cannot query field 'payment' on
type 'Member'. Did you mean 'paymentMethod'?"): with introspection off they would still spell
out the names it hides. With `INMAIL_SUGGESTIONS` off (production's default) every such guess is
cut from the message, none worked out; the rest of the error stays as it was. With it on, one
operation's errors guess at its first GUESSED_NAMES unknown names only: each guess costs.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection, Iterator
from contextvars import ContextVar
from typing import Final

from graphql.pyutils import suggestion_list
from strawberry.extensions import SchemaExtension

# " Did you mean 'a', 'b', or 'c'?" and " Did you mean the enum value 'BASIC'?": schema names
# never contain a question mark, so the guess ends at the first one.
_SUGGESTION = " Did you mean "


def without_suggestions(message: str) -> str:
    """The message with every guess cut, read once from start to end: a message may echo a
    client's text (a string literal of any length), so no occurrence is scanned again."""
    kept: list[str] = []
    start = 0
    while (guess := message.find(_SUGGESTION, start)) != -1:
        end = message.find("?", guess + len(_SUGGESTION))
        if end == -1:  # no question mark after it: no later guess has one either
            break
        kept.append(message[start:guess])
        start = end + 1
    kept.append(message[start:])
    return "".join(kept)


GUESSED_NAMES: Final = 10
"""Unknown names of one operation that graphql-core's errors guess at ("Did you mean ...?"):
each guess measures the name against every name it could have been (6 ms for a 28-character
type name against the schema's 79 types), so a document of 100 unknown type names took 600 ms
to validate. Past these the errors are worded without a guess."""

# The modules of graphql-core that guess (a test checks that no other does).
GUESSING_MODULES: Final = (
    "graphql.validation.rules.known_argument_names",
    "graphql.validation.rules.known_type_names",
    "graphql.validation.rules.fields_on_correct_type",
    "graphql.validation.rules.possible_type_extensions",
    "graphql.utilities.validate_input_value",
    "graphql.type.definition",
)

# What is left of the operation's guesses: each request runs in a task of its own, whose context
# starts from the default.
_guesses_left: ContextVar[int] = ContextVar("guesses_left", default=GUESSED_NAMES)


def guess_within_budget(input_: str, options: Collection[str]) -> list[str]:
    """graphql-core's `suggestion_list` for the operation's first GUESSED_NAMES unknown names;
    no guess past them."""
    left = _guesses_left.get()
    if left <= 0:
        return []
    _guesses_left.set(left - 1)
    return suggestion_list(input_, options)


def no_guesses() -> None:
    """The current operation's errors are worded without a guess, none worked out."""
    _guesses_left.set(0)


def guess_within_budget_everywhere() -> None:
    """Make graphql-core's errors guess with `guess_within_budget`, in every module of it that
    guesses. Idempotent."""
    for name in GUESSING_MODULES:
        vars(importlib.import_module(name))["suggestion_list"] = guess_within_budget


class HideSuggestions(SchemaExtension):
    """Cuts graphql-core's "Did you mean ...?" from every error of an operation."""

    def on_operation(self) -> Iterator[None]:
        no_guesses()  # none is worked out, only to be cut
        yield
        context = self.execution_context
        errors = list(context.pre_execution_errors or [])
        if context.result is not None:
            errors.extend(context.result.errors or [])
        for error in errors:
            error.message = without_suggestions(error.message)
