"""InMail: send (a credit), respond (a credit back), message, and what the compose window shows."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from contextlib import closing
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from inmail.domain.conversations import (
    ConversationState,
    InMailResponse,
    clean_body,
    clean_reply,
    clean_subject,
    reminder_due_at,
    state_after,
    within_credit_back_window,
)
from inmail.domain.credits import CreditSource, LedgerKind, credit_back_grant_key
from inmail.domain.errors import DomainError, ErrorCode, Reason
from inmail.domain.keyed import SEND
from inmail.domain.model import Conversation, ConversationKind, LedgerEntry, Member, Message
from inmail.domain.notifications import ConversationChange, ConversationEvent, Notification
from inmail.domain.rules import (
    ComposeInfo,
    already_responded,
    earns_credit_back,
    inmail_refusal,
    message_refusal,
    reply_refusal,
    response_refusal,
)
from inmail.services.base import Account, Deps
from inmail.services.idempotency import KeyedOutcome, KeyedRequest, replay
from inmail.services.rate_limits import (
    Action,
    RateLimits,
    count_inmail,
    count_send,
    retry_after,
)
from inmail.services.unit_of_work import Conflict, Reads, Transaction, new_id


@dataclass(frozen=True, slots=True)
class SendResult:
    conversation: Conversation
    credits_left: int


@dataclass(frozen=True, slots=True)
class RespondResult:
    conversation: Conversation
    credited_back: bool


@dataclass(frozen=True, slots=True)
class _Draft:
    sender_id: str
    recipient_id: str
    subject: str
    body: str


@dataclass(frozen=True, slots=True)
class _Sent:
    outcome: KeyedOutcome
    entries: list[LedgerEntry]
    conversation: Conversation | None  # None when a retry was answered from the first send


async def send_inmail(
    deps: Deps, sender_id: str, recipient_id: str, subject: str, body: str, key: str
) -> SendResult:
    """An InMail costs the sender one credit, the soonest to expire (SPEC 4)."""
    draft = _Draft(sender_id, recipient_id, clean_subject(subject), clean_body(body))
    request = KeyedRequest.of(
        sender_id,
        key,
        SEND,
        recipientId=recipient_id,
        subject=draft.subject,
        body=draft.body,
    )
    sent = await deps.uow.run_optimistically(_send, deps, draft, request, deps.now())
    await deps.publisher.publish(sent.entries)
    # A new InMail is answered with what was written, without reading it back; a retry under the
    # key is answered with the first send's conversation.
    conversation = sent.conversation or await _conversation(deps.reads, sent.outcome.subject_id)
    return SendResult(conversation, sent.outcome.credits_left)


async def _send(
    tx: Transaction, deps: Deps, draft: _Draft, request: KeyedRequest, now: datetime
) -> _Sent:
    # An optimistic attempt leaves a reused key to the unique `send_key_once` index (the
    # conversation's insert fails, and the careful rerun answers from the first send).
    if tx.careful and (prior := await replay(tx.idempotency, request)) is not None:
        return _Sent(prior, [], None)
    account = await _sender_may_inmail(tx, deps, draft, request, now)
    now = account.now  # the send's time (change_time): after any change that beat it
    first = Message(new_id(), draft.sender_id, draft.body, now)
    conversation = _new_inmail(draft, first, deps.limits.reminder_delay)
    account.wallet.spend(now, conversation.id)
    account.recent_inmails = count_inmail(deps.rate_limits, account.recent_inmails, now)
    entries = await account.save(tx)
    outcome = KeyedOutcome(conversation.id, account.balance)
    # The conversation carries its first message and the send's record under its key: one
    # insert writes all three.
    stored = await tx.conversations.insert(conversation, request.record(now, outcome))
    # The conversation is new in this transaction, and so are its notification and event.
    await tx.notifications.add_new(
        [Notification.inmail_received(stored, now)],
        ConversationEvent.of(ConversationChange.INMAIL, stored, now, first),
    )
    return _Sent(outcome, entries, stored)


async def _sender_may_inmail(
    tx: Transaction, deps: Deps, draft: _Draft, request: KeyedRequest, now: datetime
) -> Account:
    """The sender's credits, opened for the send once every check of SPEC 4 passed, the balance
    as of `now` (due renewals granted, lapsed lots expired) the last of them. Sender, recipient,
    the sender's live lots and what other operations hold under the key are one read."""
    found, lots, held = await tx.members.get_sender_and_recipient(
        draft.sender_id, draft.recipient_id, request.key
    )
    if held is not None:
        # Another keyed request took the key (a purchase or a plan change, with its payment
        # intent, whatever became of its charge). Only an optimistic attempt gets here (a
        # careful one replayed the key first): the careful rerun answers from its record.
        raise Conflict(f"idempotency key taken by {held.operation}")
    if draft.sender_id not in found:
        raise DomainError(ErrorCode.NOT_FOUND, Reason.OWN_MEMBER_MISSING)
    sender, recipient = found[draft.sender_id], found.get(draft.recipient_id)
    # An optimistic attempt leaves a second awaiting InMail to the `one_awaiting_per_pair`
    # index, which refuses the conversation's insert.
    awaiting = (
        tx.careful
        and recipient is not None
        and await tx.conversations.awaiting_between(draft.sender_id, draft.recipient_id)
    )
    account = Account.brought_up_to(deps.plans, sender, lots, now, latest=deps.now())
    refusal = inmail_refusal(
        sender,
        recipient,
        plans=deps.plans,
        now=account.now,
        awaiting_response=awaiting,
        balance=account.balance,
    )
    if refusal:
        raise refusal
    return account


def _new_inmail(draft: _Draft, first: Message, reminder_delay: timedelta) -> Conversation:
    """The InMail as sent: its first message is written with it, in the same insert."""
    return Conversation(
        id=new_id(),
        kind=ConversationKind.INMAIL,
        sender_id=draft.sender_id,
        recipient_id=draft.recipient_id,
        subject=draft.subject,
        state=ConversationState.AWAITING_RESPONSE,
        sent_at=first.sent_at,
        reminder_due_at=reminder_due_at(first.sent_at, reminder_delay),
        first_message=first,
    )


async def _conversation(reads: Reads, conversation_id: str | None) -> Conversation:
    conversation = await reads.conversations.get(conversation_id) if conversation_id else None
    assert conversation is not None, "a recorded conversation is never deleted"
    return conversation


@dataclass(frozen=True, slots=True)
class _Responded:
    conversation: Conversation  # as the response left it
    credited_back: bool
    entries: list[LedgerEntry]


async def respond(
    deps: Deps,
    member_id: str,
    conversation_id: str,
    response: InMailResponse,
    body: str | None,
) -> RespondResult:
    """The recipient's first response earns the sender a credit back within 90 days (SPEC 5)."""
    note = clean_reply(response, body)
    responded = await deps.uow.run(
        _respond, deps, member_id, conversation_id, response, note, deps.now()
    )
    await deps.publisher.publish(responded.entries)
    return RespondResult(responded.conversation, responded.credited_back)


async def _respond(
    tx: Transaction,
    deps: Deps,
    member_id: str,
    conversation_id: str,
    response: InMailResponse,
    note: str | None,
    now: datetime,
) -> _Responded:
    conversation = await _awaiting_my_response(tx, member_id, conversation_id)
    # The InMail, or its reminder, committed first while this response was on its way (its time
    # taken before, or in a process whose clock is a little behind): the response is recorded
    # after them, as it happened.
    now = max(now, conversation.sent_at, conversation.reminder_sent_at or now)
    if note:  # a response with words is one of the member's messages (SPEC 4's limit)
        await count_send(tx, deps.rate_limits, Action.MESSAGE, member_id, now)
    account = await _credit_back_account(tx, deps, conversation, now)
    credited = account is not None and _credit_back(account, deps, conversation)
    recorded = await tx.conversations.record_response(
        conversation,
        state=state_after(response),
        response=response,
        at=now,
        credited_back=credited,
    )
    if recorded is None:
        raise already_responded()
    reply = await _reply(tx, conversation, member_id, note, now)
    entries = await account.save(tx) if account is not None else []
    await tx.notifications.record(
        _response_notices(conversation, credited, entries, now),
        ConversationEvent.of(ConversationChange.RESPONDED, conversation, now, reply),
    )
    return _Responded(recorded, credited, entries)


async def _reply(
    tx: Transaction, conversation: Conversation, member_id: str, note: str | None, now: datetime
) -> Message | None:
    """The response's note, added to the thread as the recipient's message."""
    if not note:
        return None
    return await _add_message(tx, conversation, Message(new_id(), member_id, note, now))


async def _add_message(tx: Transaction, conversation: Conversation, message: Message) -> Message:
    """Add `message` to the thread, at the time the thread gives it (`take_message_time`: its
    own, or just after the thread's latest); the message as stored."""
    at = await tx.conversations.take_message_time(conversation, message.sent_at)
    stored = replace(message, sent_at=at)
    await tx.messages.add(conversation.id, stored)
    return stored


def _response_notices(
    conversation: Conversation, credited: bool, entries: list[LedgerEntry], now: datetime
) -> list[Notification]:
    """The sender's notices: the response, and the credit back it earned them."""
    notices = [Notification.response_received(conversation, now)]
    if credited:
        lot_id = next(
            (e.lot_id for e in entries if e.kind is LedgerKind.CREDIT_BACK and e.lot_id), None
        )
        notices.append(Notification.credited_back(conversation, lot_id, now))
    return notices


async def _awaiting_my_response(
    tx: Transaction, member_id: str, conversation_id: str
) -> Conversation:
    conversation = await tx.conversations.get(conversation_id)
    refusal = response_refusal(member_id, conversation)
    if refusal is not None:
        raise refusal
    assert conversation is not None
    return conversation


async def _credit_back_account(
    tx: Transaction, deps: Deps, conversation: Conversation, now: datetime
) -> Account | None:
    """The sender's credits, if a response now earns them a credit back."""
    if not within_credit_back_window(conversation.sent_at, now):
        return None  # nothing to read
    account = await Account.load(tx, deps.plans, conversation.sender_id, now, latest=deps.now())
    sender = None if account is None else account.member
    return account if earns_credit_back(conversation, sender, now) else None


def _credit_back(account: Account, deps: Deps, conversation: Conversation) -> bool:
    """One credit back, within the cap: False when the sender's balance is already at it."""
    lot = account.wallet.grant(
        CreditSource.CREDIT_BACK,
        1,
        account.now,
        account.member.policy(deps.plans).max_balance,
        grant_key=credit_back_grant_key(conversation.id),
        conversation_id=conversation.id,
    )
    return lot is not None


async def send_message(
    deps: Deps,
    member_id: str,
    body: str,
    *,
    recipient_id: str | None = None,
    conversation_id: str | None = None,
) -> tuple[Conversation, Message]:
    """Free messages: to a 1st-degree connection, or in an InMail that had its response."""
    text = clean_body(body)
    if recipient_id is not None and conversation_id is not None:
        raise DomainError(ErrorCode.INVALID_INPUT, Reason.RECIPIENT_OR_CONVERSATION, "recipientId")
    if recipient_id is None and conversation_id is None:
        raise DomainError(
            ErrorCode.INVALID_INPUT, Reason.RECIPIENT_OR_CONVERSATION_MISSING, "recipientId"
        )
    message = Message(new_id(), member_id, text, deps.now())
    if conversation_id is not None:
        thread_id, message = await deps.uow.run(
            _reply_in, deps.rate_limits, member_id, conversation_id, message
        )
    else:
        assert recipient_id is not None
        thread_id, message = await deps.uow.run(
            _message_connection, deps.rate_limits, member_id, recipient_id, message
        )
    return await _conversation(deps.reads, thread_id), message


async def _reply_in(
    tx: Transaction, limits: RateLimits, member_id: str, conversation_id: str, message: Message
) -> tuple[str, Message]:
    await count_send(tx, limits, Action.MESSAGE, member_id, message.sent_at)
    conversation = await tx.conversations.get(conversation_id)
    refusal = reply_refusal(member_id, conversation)
    if refusal is not None:
        raise refusal
    assert conversation is not None
    return conversation.id, await _add_with_event(tx, conversation, message)


async def _add_with_event(tx: Transaction, conversation: Conversation, message: Message) -> Message:
    stored = await _add_message(tx, conversation, message)
    await _message_event(tx, conversation, stored)
    return stored


async def _message_event(tx: Transaction, conversation: Conversation, message: Message) -> None:
    await tx.notifications.add_event(
        ConversationEvent.of(ConversationChange.MESSAGE, conversation, message.sent_at, message)
    )


async def _message_connection(
    tx: Transaction, limits: RateLimits, member_id: str, recipient_id: str, message: Message
) -> tuple[str, Message]:
    """Into the pair's direct thread, started by this message if there is none yet.

    Two first messages at once both find no thread; the unique index {senderId, pairKey} lets
    one insert win, and the other's transaction is run again and finds the winner's thread.
    """
    await count_send(tx, limits, Action.MESSAGE, member_id, message.sent_at)
    await _check_connected(tx, member_id, recipient_id)
    existing = await tx.conversations.direct_between(member_id, recipient_id)
    if existing is not None:
        return existing.id, await _add_with_event(tx, existing, message)
    thread = Conversation(
        id=new_id(),
        kind=ConversationKind.DIRECT,
        sender_id=member_id,
        recipient_id=recipient_id,
        subject="",
        state=ConversationState.ACCEPTED,
        sent_at=message.sent_at,
    )
    await tx.conversations.insert(thread)  # its latest message: this one, at its start
    await tx.messages.add(thread.id, message)
    await _message_event(tx, thread, message)
    return thread.id, message


async def _check_connected(tx: Transaction, member_id: str, recipient_id: str) -> None:
    found = await tx.members.get_many([member_id, recipient_id])
    refusal = message_refusal(member_id, found.get(member_id), found.get(recipient_id))
    if refusal is not None:
        raise refusal


class ComposeReads(Protocol):
    """The request's reads, which the compose window shares with the rest of its document."""

    def member(self, member_id: str) -> Awaitable[Member | None]: ...

    def balance(self, member_id: str) -> Awaitable[int]: ...

    def awaiting_response(
        self, sender_id: str, recipient_id: str
    ) -> Coroutine[object, object, bool]: ...


@dataclass(frozen=True, slots=True)
class _Window:
    """What the compose window reads: the two members, whether an InMail from the viewer to the
    recipient awaits a response, and the viewer's balance."""

    sender: Member | None
    recipient: Member | None
    awaiting: bool
    balance: int


async def compose(
    deps: Deps, viewer_id: str, recipient_id: str, *, reads: ComposeReads
) -> ComposeInfo:
    """What the compose window needs: can the viewer InMail this member, and with what left.

    `reads` is the request's reader, so that the viewer and the balance the same query also
    asks for (`viewer { inmailBalance }`) are read once, and the awaiting check rides in the
    same read (one round trip for the window). The balance is the member's brought up to now,
    as `sendInMail` will find it.
    """
    now = deps.now()
    window = await _read_window(reads, viewer_id, recipient_id)
    sender, recipient = window.sender, window.recipient
    if sender is None:
        raise DomainError(ErrorCode.NOT_FOUND, Reason.OWN_MEMBER_MISSING)
    # The balance sendInMail would see now: due cycles granted, lapsed lots expired.
    balance = window.balance
    reason, wait = _refusal(deps, sender, recipient, window.awaiting, balance, now)
    return ComposeInfo(
        can_send=reason is None,
        reason=reason,
        credits_left=balance,
        recipient_is_connection=recipient is not None and sender.is_connected_to(recipient.id),
        retry_after_seconds=wait,
    )


async def _read_window(reads: ComposeReads, viewer_id: str, recipient_id: str) -> _Window:
    """The compose window's reads, one round trip through the request's reader.

    The awaiting check is asked before the members are, so that the read of the viewer's
    record answers it; the balance is asked once that read is in, and is worked out from the
    record and live lots it brought. Each is awaited in turn: they all end with that one read,
    and a task each (what `gather` makes of a coroutine) costs more than the waiting."""
    with closing(reads.awaiting_response(viewer_id, recipient_id)) as awaiting_read:
        members = reads.member(viewer_id), reads.member(recipient_id)
        sender, recipient = await asyncio.gather(*members)
        awaiting = await awaiting_read
    return _Window(sender, recipient, awaiting, await reads.balance(viewer_id))


def _refusal(
    deps: Deps,
    sender: Member,
    recipient: Member | None,
    awaiting_any: bool,
    balance: int,
    now: datetime,
) -> tuple[ErrorCode | None, int | None]:
    """Why sendInMail would refuse this InMail now (None if it would send it), and with
    RATE_LIMITED the seconds until it would not."""
    awaiting = recipient is not None and awaiting_any
    refusal = inmail_refusal(
        sender, recipient, plans=deps.plans, now=now, awaiting_response=awaiting, balance=balance
    )
    if refusal:
        return refusal.code, None
    # sendInMail counts the rate limit last, once every other check has passed.
    wait = retry_after(deps.rate_limits, Action.INMAIL, sender.recent_inmails, now)
    return (None if wait is None else ErrorCode.RATE_LIMITED), wait
