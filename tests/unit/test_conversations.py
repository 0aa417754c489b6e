from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inmail.domain.conversations import (
    BODY_MAX,
    CREDIT_BACK_WINDOW,
    MAX_REMINDER_DELAY,
    SUBJECT_MAX,
    ConversationState,
    InMailResponse,
    clean_body,
    clean_reply,
    clean_subject,
    reminder_due_at,
    state_after,
    within_credit_back_window,
)
from inmail.domain.errors import DomainError, Reason
from support import refused_as_invalid_input

SENT_AT = datetime(2025, 6, 2, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("response", "state"),
    [
        (InMailResponse.INTERESTED, ConversationState.ACCEPTED),
        (InMailResponse.MAYBE_LATER, ConversationState.ACCEPTED),
        (InMailResponse.REPLY, ConversationState.ACCEPTED),
        (InMailResponse.NOT_INTERESTED, ConversationState.DECLINED),
    ],
)
def test_each_response_moves_the_conversation_to_its_state(
    response: InMailResponse, state: ConversationState
) -> None:
    assert state_after(response) is state


def test_a_response_just_inside_ninety_days_earns_the_credit_back() -> None:
    assert timedelta(days=90) == CREDIT_BACK_WINDOW
    last_moment = SENT_AT + CREDIT_BACK_WINDOW - timedelta(microseconds=1)
    assert within_credit_back_window(SENT_AT, last_moment)


def test_a_response_at_exactly_ninety_days_earns_nothing() -> None:
    assert not within_credit_back_window(SENT_AT, SENT_AT + CREDIT_BACK_WINDOW)


@given(delay=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400)))
def test_the_credit_back_window_is_exactly_the_first_ninety_days(delay: timedelta) -> None:
    assert within_credit_back_window(SENT_AT, SENT_AT + delay) == (delay < timedelta(days=90))


def test_a_subject_is_trimmed() -> None:
    assert clean_subject("  Coffee next week?\n") == "Coffee next week?"


def test_a_subject_of_exactly_the_maximum_length_is_accepted() -> None:
    assert clean_subject("s" * SUBJECT_MAX) == "s" * SUBJECT_MAX


SHOWS_NOTHING = [
    "\u200b",  # a zero-width space
    "\u0000",  # a control character
    "\u202e\u2066",  # direction marks
    " \u200b\u00a0\u3000\u2028 ",  # spaces of every kind
    "\u3164",  # the Hangul filler, a letter drawn as nothing
    "\u2800\uffa0",  # the blank Braille pattern, the halfwidth Hangul filler
    "\u0301\ufe0f",  # an accent and a variation selector with no letter to sit on
]


@pytest.mark.parametrize("subject", ["", "   \t\n", "s" * (SUBJECT_MAX + 1), *SHOWS_NOTHING])
def test_a_blank_or_oversized_subject_is_invalid_input_on_the_subject(subject: str) -> None:
    with refused_as_invalid_input("subject"):
        clean_subject(subject)


def test_text_past_its_limit_is_too_long_before_it_is_read_for_something_to_show() -> None:
    """The length is checked first: a megabyte of zero-width spaces is refused without reading
    it character by character."""
    for clean, maximum in ((clean_subject, SUBJECT_MAX), (clean_body, BODY_MAX)):
        with pytest.raises(DomainError) as refused:
            clean("\u200b" * (maximum + 1))
        assert refused.value.reason is Reason.TOO_LONG
    with pytest.raises(DomainError) as refused:
        clean_reply(InMailResponse.INTERESTED, "\u200b" * (BODY_MAX + 1))
    assert refused.value.reason is Reason.TOO_LONG


def test_text_that_shows_something_keeps_its_invisible_characters() -> None:
    assert clean_subject("\u200bHi\u200b") == "\u200bHi\u200b"
    assert clean_body("\u05e9\u05dc\u05d5\u05dd \u202e") == "\u05e9\u05dc\u05d5\u05dd \u202e"


def test_letters_with_their_marks_show_something() -> None:
    assert clean_subject("Cafe\u0301 \u2764\ufe0f") == "Cafe\u0301 \u2764\ufe0f"
    assert clean_body("\ud55c\uae00") == "\ud55c\uae00"  # Hangul syllables are letters


@pytest.mark.parametrize(
    ("text", "codepoint"),
    [("a\x00b", 0), ("bell\x07", 0x07), ("esc\x1b[31m", 0x1B), ("x\x9by", 0x9B)],
)
def test_a_subject_holding_a_control_character_is_refused_naming_it(
    text: str, codepoint: int
) -> None:
    with pytest.raises(DomainError) as refused:
        clean_subject(text)
    assert (refused.value.field, refused.value.reason) == ("subject", Reason.CONTROL_CHARACTER)
    assert refused.value.data == {"codepoint": codepoint}


def test_a_subject_is_one_line_each_run_of_breaks_and_tabs_in_it_a_space() -> None:
    assert clean_subject("Coffee\r\nnext\tweek\x0b\x0c\x85?") == "Coffee next week ?"


def test_a_body_keeps_its_line_breaks_and_tabs_but_no_other_control_character() -> None:
    pasted = "Dear Grace,\r\n\tthank you.\x0bA line break from a word processor.\x85End"
    assert clean_body(pasted) == pasted
    for text in ("a\x00b", "bell\x07", "esc\x1b[2J", "\x7fdel"):
        with pytest.raises(DomainError) as refused:
            clean_body(text)
        assert (refused.value.field, refused.value.reason) == ("body", Reason.CONTROL_CHARACTER)


def test_padding_around_a_long_subject_does_not_count_towards_its_length() -> None:
    assert clean_subject("  " + "s" * SUBJECT_MAX + "  ") == "s" * SUBJECT_MAX


def test_a_body_is_trimmed_and_may_be_as_long_as_the_maximum() -> None:
    assert (
        clean_body("  Hello Grace,\nI admire your work.  ") == "Hello Grace,\nI admire your work."
    )
    assert clean_body("b" * BODY_MAX) == "b" * BODY_MAX


@pytest.mark.parametrize("body", ["", "  ", "b" * (BODY_MAX + 1), *SHOWS_NOTHING])
def test_a_blank_or_oversized_body_is_refused_on_the_field_the_caller_names(body: str) -> None:
    with refused_as_invalid_input("message"):
        clean_body(body, field="message")


def test_a_written_reply_needs_a_body() -> None:
    for body in (None, "", "   "):
        with pytest.raises(DomainError) as refused:
            clean_reply(InMailResponse.REPLY, body)
        assert refused.value.field == "body"
    assert clean_reply(InMailResponse.REPLY, " Happy to talk. ") == "Happy to talk."


@pytest.mark.parametrize(
    "response",
    [InMailResponse.INTERESTED, InMailResponse.MAYBE_LATER, InMailResponse.NOT_INTERESTED],
)
def test_a_quick_reply_may_come_without_a_note(response: InMailResponse) -> None:
    assert clean_reply(response, None) is None
    assert clean_reply(response, "   ") is None
    assert clean_reply(response, "\u200b\u202e") is None
    assert clean_reply(response, " Try me in spring. ") == "Try me in spring."


def test_a_quick_reply_note_is_still_held_to_the_body_limit() -> None:
    with pytest.raises(DomainError):
        clean_reply(InMailResponse.INTERESTED, "b" * (BODY_MAX + 1))


def test_a_reminder_is_due_the_chosen_delay_after_sending() -> None:
    assert reminder_due_at(SENT_AT, timedelta(hours=48)) == SENT_AT + timedelta(hours=48)
    assert reminder_due_at(SENT_AT, MAX_REMINDER_DELAY) == SENT_AT + timedelta(hours=72)


@pytest.mark.parametrize("delay", [timedelta(hours=72, seconds=1), timedelta(hours=-1)])
def test_a_reminder_delay_beyond_seventy_two_hours_or_negative_is_refused(
    delay: timedelta,
) -> None:
    with pytest.raises(ValueError, match="reminder delay"):
        reminder_due_at(SENT_AT, delay)
