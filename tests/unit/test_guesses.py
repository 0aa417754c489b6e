"""graphql-core's guesses ("Did you mean ...?") are bounded per operation, in every module of it
that guesses, and none is worked out where suggestions are off."""

from __future__ import annotations

import asyncio
import contextvars
import sys

import pytest

from inmail import disclosure
from inmail.disclosure import (
    GUESSED_NAMES,
    GUESSING_MODULES,
    guess_within_budget,
    guess_within_budget_everywhere,
)
from inmail.resolvers.root import build_schema
from support import graphql_core_modules_naming
from support import test_settings as settings_for_tests

# Type names one letter off the schema's: each is an unknown type with a guess to offer.
LETTERS = "abcdefghijklmnopqrstuvwxyzABCD"
UNKNOWN_TYPES = "{ " + " ".join(f"... on Member{c} {{ now }}" for c in LETTERS) + " }"


def test_every_module_of_graphql_core_that_guesses_guesses_within_the_budget() -> None:
    """A graphql-core upgrade that guesses in a module of its own fails here."""
    guessing = graphql_core_modules_naming("suggestion_list", "graphql.pyutils.suggestion_list")
    guess_within_budget_everywhere()

    assert guessing == set(GUESSING_MODULES)
    assert all(
        vars(sys.modules[name])["suggestion_list"] is guess_within_budget for name in guessing
    )


def _messages(suggestions: bool) -> list[str]:
    """The errors of one request's document with 30 unknown type names, in a task of its own."""
    schema = build_schema(settings_for_tests(suggestions=suggestions))

    async def request() -> list[str]:
        result = await schema.execute(UNKNOWN_TYPES)
        return [error.message for error in result.errors or []]

    return contextvars.Context().run(asyncio.run, request())


def test_an_operation_guesses_at_its_first_unknown_names_only() -> None:
    messages = _messages(suggestions=True)

    unknown = [message for message in messages if message.startswith("Unknown type")]
    assert len(unknown) == 30
    guessed = [message for message in unknown if "Did you mean" in message]
    assert len(guessed) == GUESSED_NAMES


def test_each_operation_has_its_own_guesses() -> None:
    first, second = _messages(suggestions=True), _messages(suggestions=True)
    assert sum("Did you mean" in m for m in first) == sum("Did you mean" in m for m in second)


def test_with_suggestions_off_no_guess_is_worked_out(monkeypatch: pytest.MonkeyPatch) -> None:
    worked_out: list[str] = []

    def counted(input_: str, options: object) -> list[str]:
        worked_out.append(input_)
        return []

    monkeypatch.setattr(disclosure, "suggestion_list", counted)

    messages = _messages(suggestions=False)

    assert len([m for m in messages if m.startswith("Unknown type")]) == 30
    assert not any("Did you mean" in m for m in messages)
    assert worked_out == []
    _messages(suggestions=True)
    assert len(worked_out) == GUESSED_NAMES  # the count above would have seen them
