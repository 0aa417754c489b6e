"""InMail: send (a credit), respond (a credit back), message, and what the compose window shows."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

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
from inmail.domain.credits import CreditSource
from inmail.domain.errors import DomainError, ErrorCode
from inmail.domain.model import Conversation, ConversationKind, LedgerEntry, Member, Message
from inmail.domain.rules import inmail_refusal
from inmail.repositories.conversations import as_stored
from inmail.repositories.mongo import Session, new_id
from inmail.services.base import Account, Deps, request_hash, transact
from inmail.services.rate_limits import Action, count_send

IDEMPOTENCY_KEY_MAX = 100


@dataclass(frozen=True, slots=True)
class SendResult:
    conversation: Conversation
    credits_left: int


@dataclass(frozen=True, slots=True)
class RespondResult:
    conversation: Conversation
    credited_back: bool


@dataclass(frozen=True, slots=True)
class ComposeInfo:
    can_send: bool
    reason: ErrorCode | None
    credits_left: int
    recipient_is_connection: bool


def clean_idempotency_key(key: str) -> str:
    key = key.strip()
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX:
        raise DomainError(
            ErrorCode.INVALID_INPUT,
            f"idempotencyKey must be 1 to {IDEMPOTENCY_KEY_MAX} characters.",
            "idempotencyKey",
        )
    return key


def reused_key() -> DomainError:
    return DomainError(
        ErrorCode.IDEMPOTENCY_KEY_REUSED,
        "This idempotency key was used for a different request.",
        "idempotencyKey",
    )


async def send_inmail(
    deps: Deps, sender_id: str, recipient_id: str, subject: str, body: str, key: str
) -> SendResult:
    subject, body = clean_subject(subject), clean_body(body)
    key = clean_idempotency_key(key)
    fingerprint = request_hash("sendInMail", recipientId=recipient_id, subject=subject, body=body)
    now = deps.now()

    async def work(session: Session) -> tuple[str, int, list[LedgerEntry], Conversation | None]:
        prior = await deps.idempotency.find(sender_id, key, session)
        if prior is not None:
            if prior["requestHash"] != fingerprint:
                raise reused_key()
            return prior["result"]["conversationId"], prior["result"]["creditsLeft"], [], None
        found = await deps.members.get_many([sender_id, recipient_id], session)
        if sender_id not in found:
            raise DomainError(ErrorCode.NOT_FOUND, "Your member record does not exist.")
        sender, recipient = found[sender_id], found.get(recipient_id)
        awaiting = recipient is not None and await deps.conversations.awaiting_between(
            sender_id, recipient_id, session
        )
        # Checks that need no credits come first; credits are looked at last, in the wallet.
        refusal = inmail_refusal(
            sender, recipient, plans=deps.plans, now=now, awaiting_response=awaiting, balance=1
        )
        if refusal:
            raise refusal
        account = await Account.open(deps, sender, now, session)
        conversation_id = new_id()
        account.wallet.spend(now, conversation_id)
        await count_send(deps, Action.INMAIL, sender_id, now, session)
        entries = await account.save(deps, session)
        conversation = Conversation(
            id=conversation_id,
            kind=ConversationKind.INMAIL,
            sender_id=sender_id,
            recipient_id=recipient_id,
            subject=subject,
            state=ConversationState.AWAITING_RESPONSE,
            sent_at=now,
            messages=(Message(new_id(), sender_id, body, now),),
            reminder_due_at=reminder_due_at(now, deps.limits.reminder_delay),
        )
        await deps.conversations.insert(conversation, session)
        await deps.idempotency.insert(
            sender_id,
            key,
            operation="sendInMail",
            request_hash=fingerprint,
            result={"conversationId": conversation_id, "creditsLeft": account.balance},
            at=now,
            session=session,
        )
        return conversation_id, account.balance, entries, conversation

    conversation_id, credits_left, entries, written = await transact(deps, work)
    await deps.publisher.publish(entries)
    # A new InMail is answered with what was written, without reading it back; a retry under the
    # key is answered with the first send's conversation.
    conversation = (
        as_stored(written) if written is not None else await deps.conversations.get(conversation_id)
    )
    assert conversation is not None
    return SendResult(conversation, credits_left)


async def respond(
    deps: Deps,
    member_id: str,
    conversation_id: str,
    response: InMailResponse,
    body: str | None,
) -> RespondResult:
    """The recipient's first response earns the sender a credit back within 90 days (SPEC 5)."""
    note = clean_reply(response, body)
    now = deps.now()

    async def work(session: Session) -> tuple[bool, list[LedgerEntry]]:
        conversation = await deps.conversations.get(conversation_id, session)
        if (
            conversation is None
            or not conversation.has_party(member_id)
            or (conversation.kind is not ConversationKind.INMAIL)
        ):
            raise DomainError(ErrorCode.NOT_FOUND, "No such InMail.", "conversationId")
        if conversation.recipient_id != member_id:
            raise DomainError(
                ErrorCode.NOT_RECIPIENT, "Only the recipient can respond.", "conversationId"
            )
        if conversation.responded_at is not None:
            raise DomainError(
                ErrorCode.ALREADY_RESPONDED, "This InMail already has a response.", "conversationId"
            )
        sender = await deps.members.get(conversation.sender_id, session)
        eligible = (
            sender is not None
            and within_credit_back_window(conversation.sent_at, now)
            and sender.subscription is not None
            and sender.subscription.is_active
        )
        account = (
            await Account.open(deps, sender, now, session)
            if (sender is not None and eligible)
            else None
        )
        credited = False
        if account is not None:
            policy = account.member.policy(deps.plans)
            lot = account.wallet.grant(
                CreditSource.CREDIT_BACK,
                1,
                now,
                policy.max_balance,
                grant_key=f"credit-back:{conversation.id}",
                conversation_id=conversation.id,
            )
            credited = lot is not None
        reply = Message(new_id(), member_id, note, now) if note else None
        recorded = await deps.conversations.record_response(
            conversation.id,
            state=state_after(response),
            response=response,
            at=now,
            reply=reply,
            credited_back=credited,
            session=session,
        )
        if not recorded:
            raise DomainError(
                ErrorCode.ALREADY_RESPONDED, "This InMail already has a response.", "conversationId"
            )
        entries = await account.save(deps, session) if account is not None else []
        return credited, entries

    credited, entries = await transact(deps, work)
    await deps.publisher.publish(entries)
    conversation = await deps.conversations.get(conversation_id)
    assert conversation is not None
    return RespondResult(conversation, credited)


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
    if (recipient_id is None) == (conversation_id is None):
        raise DomainError(
            ErrorCode.INVALID_INPUT,
            "Give either recipientId or conversationId, not both.",
            "recipientId",
        )
    now = deps.now()
    message = Message(new_id(), member_id, text, now)

    async def work(session: Session) -> str:
        await count_send(deps, Action.MESSAGE, member_id, now, session)
        if conversation_id is not None:
            conversation = await deps.conversations.get(conversation_id, session)
            if conversation is None or not conversation.has_party(member_id):
                raise DomainError(ErrorCode.NOT_FOUND, "No such conversation.", "conversationId")
            if conversation.state is ConversationState.AWAITING_RESPONSE:
                raise DomainError(
                    ErrorCode.AWAITING_RESPONSE,
                    "This InMail has no response yet.",
                    "conversationId",
                )
            await deps.conversations.append_message(conversation.id, message, session)
            return conversation.id
        assert recipient_id is not None
        found = await deps.members.get_many([member_id, recipient_id], session)
        if recipient_id not in found:
            raise DomainError(ErrorCode.NOT_FOUND, "No such member.", "recipientId")
        if recipient_id == member_id:
            raise DomainError(
                ErrorCode.CANNOT_MESSAGE_SELF, "You cannot message yourself.", "recipientId"
            )
        if member_id not in found or not found[member_id].is_connected_to(recipient_id):
            raise DomainError(
                ErrorCode.NOT_CONNECTED,
                "Only 1st-degree connections can be messaged for free.",
                "recipientId",
            )
        existing = await deps.conversations.direct_between(member_id, recipient_id, session)
        if existing is not None:
            await deps.conversations.append_message(existing.id, message, session)
            return existing.id
        thread = Conversation(
            id=new_id(),
            kind=ConversationKind.DIRECT,
            sender_id=member_id,
            recipient_id=recipient_id,
            subject="",
            state=ConversationState.ACCEPTED,
            sent_at=now,
            messages=(message,),
        )
        await deps.conversations.insert(thread, session)
        return thread.id

    thread_id = await transact(deps, work)
    conversation = await deps.conversations.get(thread_id)
    assert conversation is not None
    return conversation, message


async def compose(
    deps: Deps,
    viewer_id: str,
    recipient_id: str,
    *,
    load_member: Callable[[str], Awaitable[Member | None]] | None = None,
    load_balance: Callable[[str], Awaitable[int]] | None = None,
) -> ComposeInfo:
    """What the compose window needs: can the viewer InMail this member, and with what left.

    The API passes its request's DataLoaders, so that the viewer and the balance the same query
    also asks for (`viewer { inmailBalance }`) are read once; the reads go out together.
    """
    now = deps.now()

    async def members() -> tuple[Member | None, Member | None]:
        if load_member is not None:
            sender, recipient = await asyncio.gather(
                load_member(viewer_id), load_member(recipient_id)
            )
            return sender, recipient
        found = await deps.members.get_many([viewer_id, recipient_id])
        return found.get(viewer_id), found.get(recipient_id)

    async def credits() -> int:
        if load_balance is not None:
            return await load_balance(viewer_id)
        return (await deps.lots.balances([viewer_id], now))[viewer_id]

    (sender, recipient), balance, awaiting_any = await asyncio.gather(
        members(), credits(), deps.conversations.awaiting_between(viewer_id, recipient_id)
    )
    if sender is None:
        raise DomainError(ErrorCode.NOT_FOUND, "Your member record does not exist.")
    awaiting = recipient is not None and awaiting_any
    refusal = inmail_refusal(
        sender, recipient, plans=deps.plans, now=now, awaiting_response=awaiting, balance=balance
    )
    return ComposeInfo(
        can_send=refusal is None,
        reason=refusal.code if refusal else None,
        credits_left=balance,
        recipient_is_connection=recipient is not None and sender.is_connected_to(recipient.id),
    )
