"""Cutting graphql-core's guesses from error messages: what a regular expression would cut, read
in one pass (a message can echo a client's string of any length)."""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from inmail.disclosure import without_suggestions

# The rule as a regular expression: a guess runs from the phrase to the first question mark.
GUESS = re.compile(r" Did you mean [^?]*\?")

fragments = st.sampled_from([" Did you mean ", "?", "'paymentMethod'", " ", "x", "\n", "Did"])


@given(message=st.lists(fragments, max_size=12).map("".join))
@example(message="Cannot query field 'payment' on type 'Member'. Did you mean 'paymentMethod'?")
@example(message="Int cannot represent: \" Did you mean  Did you mean \" Did you mean 'x'? ok")
def test_every_guess_is_cut_and_nothing_else(message: str) -> None:
    assert without_suggestions(message) == GUESS.sub("", message)


def test_a_message_echoing_the_phrase_many_times_keeps_it_when_no_guess_ends() -> None:
    echoed = 'Int cannot represent non-integer value: "' + " Did you mean " * 10_000 + '"'
    assert without_suggestions(echoed) == echoed
