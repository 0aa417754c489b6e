"""The database's answer to "which InMails are due a reminder" is the domain's.

The rule lives once, in domain/model.py (`REMINDER_DUE`); the scheduler's queries for reminders
due (repositories/conversations.py) and their index's partial filter are translated from it.
Here Hypothesis writes random conversations (every state, reminded or not, with or without a
reminder time, due before, at and after the instant asked about) to the real mongod and
compares its answers with the domain's.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from inmail.domain.conversations import ConversationState
from inmail.domain.model import REMINDER_DUE, Conversation, ConversationKind
from inmail.repositories.conversations import conversation_to_doc
from inmail.repositories.mongo import Mongo
from inmail.repositories.unit_of_work import MongoUnitOfWork
from support import AGAINST_THE_DATABASE, answered_by_the_database

NOW = datetime(2026, 3, 15, 0, 0, tzinfo=UTC)
MOST = 10  # InMails in one example
Due = tuple[list[str], datetime | None]  # (InMails due a reminder by NOW, the next one after)

# BSON keeps milliseconds: every instant is NOW plus or minus whole milliseconds, and the
# boundaries (due exactly now, a millisecond either side) come up often.
instants = st.one_of(
    st.sampled_from([-1, 0, 1]),
    st.integers(min_value=-10 * 86_400_000, max_value=10 * 86_400_000),
).map(lambda ms: NOW + timedelta(milliseconds=ms))


@st.composite
def conversations(draw: st.DrawFn) -> list[Conversation]:
    found = []
    for index in range(draw(st.integers(min_value=0, max_value=MOST))):
        found.append(
            Conversation(
                id=f"conversation-{index:02}",
                kind=ConversationKind.INMAIL,
                sender_id=f"sender-{index:02}",
                recipient_id="recipient",
                subject="Hello",
                state=draw(st.sampled_from(ConversationState)),
                sent_at=NOW - timedelta(days=11),
                reminder_sent_at=draw(st.none() | instants),
                reminder_due_at=draw(st.none() | instants),
            )
        )
    return found


async def reminders_due(mongo: Mongo) -> Due:
    """The database's reminders due by NOW, and the next reminder time after it."""
    reads = MongoUnitOfWork(mongo).reads.conversations
    due = await reads.reminders_due_after(NOW, after=None, limit=MOST + 1)
    return [d.conversation_id for d in due], await reads.next_reminder_due_at(NOW)


def _due_order(conversation: Conversation) -> tuple[datetime, str]:
    assert conversation.reminder_due_at is not None
    return conversation.reminder_due_at, conversation.id


@AGAINST_THE_DATABASE
@given(written=conversations())
def test_the_database_finds_the_same_reminders_due_as_the_domain(
    mongodb_uri: str, db_name: str, written: list[Conversation]
) -> None:
    docs = [conversation_to_doc(c) for c in written]
    due, next_due = answered_by_the_database(
        mongodb_uri, db_name, reminders_due, holding=("conversations", docs)
    )

    expected = sorted((c for c in written if REMINDER_DUE.is_due(c, NOW)), key=_due_order)
    assert due == [c.id for c in expected]
    later = NOW + timedelta(days=11)  # past every reminder time drawn
    assert next_due == min(
        (
            c.reminder_due_at
            for c in written
            if c.reminder_due_at is not None
            and c.reminder_due_at > NOW
            and REMINDER_DUE.is_due(c, later)
        ),
        default=None,
    )
