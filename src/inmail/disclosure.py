"""What the API tells a stranger about its schema beyond what it asked.

graphql-core words some errors with guesses from the schema ("Cannot query field 'payment' on
type 'Member'. Did you mean 'paymentMethod'?"): with introspection off they would still spell
out the names it hides. With `INMAIL_SUGGESTIONS` off (production's default) every such guess is
cut from the message; the rest of the error stays as it was.
"""

from __future__ import annotations

from collections.abc import Iterator

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


class HideSuggestions(SchemaExtension):
    """Cuts graphql-core's "Did you mean ...?" from every error of an operation."""

    def on_operation(self) -> Iterator[None]:
        yield
        context = self.execution_context
        errors = list(context.pre_execution_errors or [])
        if context.result is not None:
            errors.extend(context.result.errors or [])
        for error in errors:
            error.message = without_suggestions(error.message)
