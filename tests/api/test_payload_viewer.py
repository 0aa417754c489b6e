"""A member's own mutations answer with the viewer as they left them, so that a client's cache
(Apollo's, Relay's: by `Member:<id>`) takes the new balance from the payload itself."""

from __future__ import annotations

from support import Api, new_key

VIEWER = "viewer { id inmailBalance }"


async def test_a_send_answers_the_senders_new_balance_and_a_refused_one_the_unchanged(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    grace = await api.create_member("Grace Hopper", "BASIC")
    send = (
        "mutation($i: SendInMailInput!) { sendInMail(input: $i) "
        f"{{ creditsLeft {VIEWER} errors {{ code }} }} }}"
    )
    payload = {"recipientId": grace.id, "subject": "Hi", "body": "Hello.", "idempotencyKey": ""}

    sent = await api.payload(
        "sendInMail", send, {"i": {**payload, "idempotencyKey": new_key()}}, ada.token
    )
    again = await api.payload(
        "sendInMail", send, {"i": {**payload, "idempotencyKey": new_key()}}, ada.token
    )

    assert sent["errors"] == []
    assert sent["viewer"] == {"id": ada.id, "inmailBalance": 4}
    assert sent["creditsLeft"] == 4
    assert again["errors"] == [{"code": "AWAITING_RESPONSE"}]
    assert again["viewer"] == {"id": ada.id, "inmailBalance": 4}


async def test_a_purchase_and_a_response_answer_the_viewers_balance_after_them(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    grace = await api.create_member("Grace Hopper", "PREMIUM_CAREER")
    sent = await api.send(ada, grace)
    purchase = (
        "mutation($i: PurchaseInMailCreditsInput!) { purchaseInMailCredits(input: $i) "
        f"{{ creditsLeft {VIEWER} }} }}"
    )
    respond = (
        "mutation($i: RespondToInMailInput!) { respondToInMail(input: $i) "
        "{ creditedBack viewer { id } errors { code } } }"
    )

    bought = await api.payload(
        "purchaseInMailCredits",
        purchase,
        {"i": {"quantity": 2, "idempotencyKey": new_key()}},
        ada.token,
    )
    responded = await api.payload(
        "respondToInMail",
        respond,
        {"i": {"conversationId": sent["conversation"]["id"], "response": "INTERESTED"}},
        grace.token,
    )

    assert bought["viewer"] == {"id": ada.id, "inmailBalance": 6}
    assert bought["creditsLeft"] == 6
    assert responded == {"creditedBack": True, "viewer": {"id": grace.id}, "errors": []}
    assert await api.balance(ada) == 7


async def test_marking_notifications_read_answers_the_viewer(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    mark = (
        "mutation($i: MarkNotificationsReadInput!) { markNotificationsRead(input: $i) "
        "{ unreadCount viewer { id } errors { code } } }"
    )

    own = await api.payload("markNotificationsRead", mark, {"i": {"all": True}}, ada.token)

    assert own == {"unreadCount": 0, "viewer": {"id": ada.id}, "errors": []}
