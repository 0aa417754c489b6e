"""The reference web client at /app, as two members use it in two browsers at once."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from browser.conftest import Browsers, Member, RunningService, wait
from harness.servers import ServiceProcess
from support import serving, session_service_env

pytestmark = pytest.mark.browser


def sign_in(driver: WebDriver, service: RunningService, member: Member) -> None:
    driver.get(f"{service.url}/app")
    wait(
        driver,
        "the client's script",
        lambda d: d.execute_script("return document.body.dataset.ready"),
    )
    submit_token(driver, member)
    # Set once per page load: still there at the end means the page was never reloaded.
    driver.execute_script("window.loadedOnce = true")


def submit_token(driver: WebDriver, member: Member) -> None:
    """Sign in on the page as it is, and wait until the member's page is live."""
    driver.find_element(By.ID, "token-input").send_keys(member.token)
    driver.find_element(By.ID, "sign-in").click()
    wait(driver, f"{member.name} signed in", lambda d: text(d, "viewer-name") == member.name)
    wait(
        driver,
        "the live connection",
        lambda d: d.find_element(By.ID, "live-status").get_attribute("data-state") == "connected",
    )


def text(driver: WebDriver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def attributes(driver: WebDriver, selector: str, *names: str) -> list[tuple[str | None, ...]]:
    """These attributes of every element the selector finds, in page order."""
    return [
        tuple(element.get_attribute(name) for name in names)
        for element in driver.find_elements(By.CSS_SELECTOR, selector)
    ]


def click(driver: WebDriver, selector: str) -> bool:
    driver.find_element(By.CSS_SELECTOR, selector).click()
    return True


def direct_thread(driver: WebDriver, what: str) -> str:
    """The id of the first direct thread in the inbox, read in the look that finds it (the
    inbox may be drawn again between two looks)."""
    ids = wait(
        driver,
        what,
        lambda d: [
            e.get_attribute("data-conversation-id")
            for e in d.find_elements(By.CSS_SELECTOR, '#inbox [data-kind="DIRECT"]')
        ],
    )
    return str(ids[0])


def item(driver: WebDriver, box: str, conversation_id: str) -> WebElement | None:
    found = driver.find_elements(
        By.CSS_SELECTOR, f'#{box} [data-conversation-id="{conversation_id}"]'
    )
    return found[0] if found else None


def test_an_inmail_travels_from_compose_to_inbox_and_its_answer_returns_the_credit_live(
    service: RunningService, browsers: Browsers
) -> None:
    ada = service.create_member("Ada Lovelace")
    grace = service.create_member("Grace <b>Hopper</b>")
    a, b = browsers.open("ada"), browsers.open("grace")
    sign_in(a, service, ada)
    sign_in(b, service, grace)
    assert text(a, "balance") == "5"
    assert text(b, "unread-count") == "1"  # her first allotment, on joining

    a.find_element(By.ID, "compose-recipient").send_keys(grace.id)
    a.find_element(By.ID, "compose-lookup").click()
    wait(a, "the recipient's name", lambda d: text(d, "compose-recipient-name") == grace.name)
    assert a.find_elements(By.CSS_SELECTOR, "#compose b") == [], "a name is text, not markup"
    assert text(a, "compose-credits") == "5"
    assert a.find_element(By.ID, "compose-send").is_enabled()

    subject = "Your compiler <img src=x onerror=alert(1)>"
    a.find_element(By.ID, "compose-subject").send_keys(subject)
    a.find_element(By.ID, "compose-body").send_keys("Could we talk about the A-0 System?")
    a.find_element(By.ID, "compose-send").click()
    wait(a, "the send's result", lambda d: text(d, "compose-result").startswith("Sent"))
    wait(a, "the balance after the debit, live", lambda d: text(d, "balance") == "4")
    # A list the page re-renders live is read inside a wait, which retries a read that found an
    # element the page had just replaced.
    ((conversation_id, state),) = wait(
        a,
        "the InMail in the sent box",
        lambda d: attributes(
            d, "#sent [data-testid=sent-item]", "data-conversation-id", "data-state"
        ),
    )
    assert state == "AWAITING_RESPONSE"

    received = wait(
        b,
        "the InMail in Grace's inbox",
        lambda d: (found := item(d, "inbox", conversation_id)) is not None and found.text,
    )
    assert subject in received
    assert "Could we talk about the A-0 System?" in received
    assert b.find_elements(By.CSS_SELECTOR, "#inbox img") == [], "a subject is text, not markup"
    wait(b, "the unread notification", lambda d: text(d, "unread-count") == "2")
    assert attributes(b, "#notifications li", "data-kind") == [("INMAIL_RECEIVED",), ("RENEWED",)]

    wait(
        b,
        "a click on the response",
        lambda d: click(
            d, f'#inbox [data-conversation-id="{conversation_id}"] [data-testid=respond-INTERESTED]'
        ),
    )
    wait(
        b,
        "the accepted InMail in Grace's inbox",
        lambda d: (
            (found := item(d, "inbox", conversation_id)) is not None
            and found.get_attribute("data-state") == "ACCEPTED"
        ),
    )

    wait(
        a,
        "the response in Ada's sent box",
        lambda d: (
            (found := item(d, "sent", conversation_id)) is not None
            and found.get_attribute("data-state") == "ACCEPTED"
        ),
    )
    wait(a, "the credit back, live", lambda d: text(d, "balance") == "5")
    wait(
        a,
        "the response named in Ada's sent box",
        lambda d: (
            (found := item(d, "sent", conversation_id)) is not None and "INTERESTED" in found.text
        ),
    )
    wait(a, "Ada's notifications", lambda d: int(text(d, "unread-count")) == 3)
    kinds = set(attributes(a, "#notifications li", "data-kind"))
    assert kinds == {("RESPONSE_RECEIVED",), ("CREDITED_BACK",), ("RENEWED",)}
    for driver in (a, b):
        assert driver.execute_script("return window.loadedOnce") is True, "the page reloaded"

    b.find_element(By.ID, "mark-all-read").click()
    wait(b, "Grace's notifications read", lambda d: text(d, "unread-count") == "0")


def test_the_compose_window_says_why_sending_is_refused_and_buying_credits_updates_the_balance(
    service: RunningService, browsers: Browsers
) -> None:
    linus = service.create_member("Linus Basic", plan="BASIC")
    margaret = service.create_member("Margaret Hamilton")
    browser = browsers.open("linus")
    sign_in(browser, service, linus)
    browser.find_element(By.ID, "compose-recipient").send_keys(margaret.id)
    browser.find_element(By.ID, "compose-lookup").click()
    wait(browser, "the refusal", lambda d: text(d, "compose-reason") != "")
    assert (
        browser.find_element(By.ID, "compose-reason").get_attribute("data-reason")
        == "UPGRADE_REQUIRED"
    )
    assert "upgrade" in text(browser, "compose-reason").lower()
    assert not browser.find_element(By.ID, "compose-send").is_enabled()
    assert not browser.find_element(By.ID, "buy-credits").is_enabled()

    buyer = browsers.open("margaret")
    sign_in(buyer, service, margaret)
    quantity = buyer.find_element(By.ID, "buy-quantity")
    quantity.clear()
    quantity.send_keys("3")
    buyer.find_element(By.ID, "buy-credits").click()
    wait(buyer, "the purchase", lambda d: text(d, "buy-result").startswith("Bought 3"))
    wait(buyer, "the bought credits, live", lambda d: text(d, "balance") == "8")
    wait(buyer, "the purchase notification", lambda d: text(d, "unread-count") == "2")


@pytest.fixture
def limited_service(mongodb_uri: str, tmp_path: Path) -> Iterator[RunningService]:
    """The service with room for two InMails a minute, and a thousand messages, on a clock
    that stands still: a minute never passes while a test runs, however slow the machine."""
    env = session_service_env(
        mongodb_uri,
        tmp_path / "data",
        INMAIL_METRICS_PORT="off",
        INMAIL_CLOCK="manual",
        INMAIL_RATE_LIMIT_INMAILS_PER_MINUTE="2",
        INMAIL_RATE_LIMIT_MESSAGES_PER_MINUTE="1000",
    )
    process = ServiceProcess.serve(env, tmp_path / "serve.log", die_with_parent=True)
    with serving(process):
        yield RunningService(process, env)


def test_a_rate_limited_compose_window_says_when_sending_is_possible_again(
    limited_service: RunningService, browsers: Browsers
) -> None:
    service = limited_service
    ada = service.create_member("Ada Lovelace")
    readers = [service.create_member(f"Reader {n}", plan="BASIC") for n in range(3)]
    for reader in readers[:2]:
        send_over_the_api(service, ada, reader)
    browser = browsers.open("ada")
    sign_in(browser, service, ada)
    browser.find_element(By.ID, "compose-recipient").send_keys(readers[2].id)
    browser.find_element(By.ID, "compose-lookup").click()
    wait(browser, "the refusal", lambda d: text(d, "compose-reason") != "")

    reason = browser.find_element(By.ID, "compose-reason")
    assert reason.get_attribute("data-reason") == "RATE_LIMITED"
    wait_for = re.search(r"send again in (\d+) s", reason.text)
    assert wait_for is not None, reason.text
    assert 1 <= int(wait_for[1]) <= 60
    assert not browser.find_element(By.ID, "compose-send").is_enabled()


def test_a_thread_longer_than_its_latest_messages_shows_the_earlier_ones_when_asked(
    limited_service: RunningService, browsers: Browsers
) -> None:
    service = limited_service
    ada = service.create_member("Ada Lovelace")
    alan = service.create_member("Alan Turing", plan="BASIC")
    service.connect(ada, alan)

    def message(n: int) -> None:
        payload = service.post(
            f'mutation {{ sendMessage(input: {{recipientId: "{alan.id}", body: "Note {n}"}}) '
            "{ errors { code } } }",
            ada.token,
        )["data"]["sendMessage"]
        assert payload["errors"] == [], payload

    for n in range(105):
        message(n)
    browser = browsers.open("alan")
    sign_in(browser, service, alan)
    thread = direct_thread(browser, "the thread in Alan's inbox")
    box = f'#inbox [data-conversation-id="{thread}"]'

    def notes(d: WebDriver) -> list[str]:
        return [p.text for p in d.find_elements(By.CSS_SELECTOR, f"{box} [data-testid=message]")]

    shown = wait(browser, "the latest messages", notes)
    assert shown == [f"Ada Lovelace: Note {n}" for n in range(5, 105)]
    wait(
        browser,
        "a click on the earlier messages",
        lambda d: click(d, f"{box} [data-testid=earlier-messages]"),
    )
    whole = [f"Ada Lovelace: Note {n}" for n in range(105)]
    wait(browser, "the whole thread, in order", lambda d: notes(d) == whole)
    assert browser.find_elements(By.CSS_SELECTOR, f"{box} [data-testid=earlier-messages]") == []

    message(105)  # a live update draws the thread again: it stays whole, and grows
    grown = [f"Ada Lovelace: Note {n}" for n in range(106)]
    wait(browser, "the new message, live, the thread still whole", lambda d: notes(d) == grown)


def send_over_the_api(
    service: RunningService, sender: Member, recipient: Member, subject: str | None = None
) -> str:
    """An InMail sent by `sender` over the API, as another device of theirs would; its id."""
    fields = {
        "recipientId": recipient.id,
        "subject": subject or f"From {sender.name}",
        "body": "Could we talk?",
        "idempotencyKey": f"{sender.id}-{recipient.id}",
    }
    given = ", ".join(f"{name}: {json.dumps(value)}" for name, value in fields.items())
    mutation = (
        f"mutation {{ sendInMail(input: {{{given}}}) "
        "{ conversation { id } errors { code } } }"
    )
    payload = service.post(mutation, sender.token)["data"]["sendInMail"]
    assert payload["errors"] == [], payload
    conversation_id: str = payload["conversation"]["id"]
    return conversation_id


def test_text_a_member_wrote_reorders_itself_alone_never_what_stands_beside_it(
    service: RunningService, browsers: Browsers
) -> None:
    """A right-to-left override never closed (U+202E) in a subject would draw the rest of the
    line reversed: the sender before the subject, "fdp.exe" as "exe.pdf". Each piece of text a
    member wrote is set apart, so the sender's name is still drawn after the subject."""
    mallory = service.create_member("Mallory \u202eevil")
    grace = service.create_member("Grace Hopper")
    conversation = send_over_the_api(service, mallory, grace, "Invoice \u202efdp.exe")
    browser = browsers.open("grace")
    sign_in(browser, service, grace)
    # Where the subject ends and the sender's name starts on screen, read in one go (the inbox
    # may be drawn again between two reads).
    edges = wait(
        browser, "the InMail in the inbox", lambda d: d.execute_script(EDGES, conversation)
    )
    subject_right, sender_left = edges
    assert sender_left >= subject_right, edges


EDGES = """
const entry = document.querySelector(`#inbox [data-conversation-id="${arguments[0]}"]`);
if (!entry) return null;
const rects = (field) => [...entry.querySelector(`[data-field=${field}]`).getClientRects()];
return [
  Math.max(...rects("subject").map((r) => r.right)),
  Math.min(...rects("sender").map((r) => r.left)),
];
"""


def test_editing_the_recipient_after_a_look_up_forgets_who_was_looked_up(
    service: RunningService, browsers: Browsers
) -> None:
    """The InMail goes to the member whose id the field holds: after an edit, the one looked
    up before is forgotten, and nothing can be sent until the new id is looked up."""
    ada = service.create_member("Ada Lovelace")
    grace = service.create_member("Grace Hopper")
    zed = service.create_member("Zed Shaw")
    a = browsers.open("ada")
    sign_in(a, service, ada)
    field = a.find_element(By.ID, "compose-recipient")
    field.send_keys(grace.id)
    a.find_element(By.ID, "compose-lookup").click()
    wait(a, "Grace looked up", lambda d: d.find_element(By.ID, "compose-send").is_enabled())

    field.clear()
    field.send_keys(zed.id)
    a.find_element(By.ID, "compose-subject").send_keys("For Zed only")
    a.find_element(By.ID, "compose-body").send_keys("Private")
    a.execute_script("document.getElementById('compose-form').requestSubmit()")

    assert not a.find_element(By.ID, "compose-send").is_enabled()
    assert text(a, "compose-recipient-name") == "nobody yet"
    a.find_element(By.ID, "compose-lookup").click()
    wait(a, "Zed looked up", lambda d: text(d, "compose-recipient-name") == zed.name)
    a.find_element(By.ID, "compose-send").click()
    wait(a, "the send's result", lambda d: text(d, "compose-result").startswith("Sent"))
    sent = wait(
        a,
        "the InMail in the sent box",
        lambda d: [
            e.text for e in d.find_elements(By.CSS_SELECTOR, "#sent [data-testid=sent-item]")
        ],
    )
    assert len(sent) == 1
    assert zed.name in sent[0]
    assert text(a, "balance") == "4"  # one send, to Zed


def test_a_reply_being_written_survives_a_live_update_of_the_inbox(
    service: RunningService, browsers: Browsers
) -> None:
    pat = service.create_member("Pat Crowley")
    alan = service.create_member("Alan Turing")
    grace = service.create_member("Grace Hopper")
    first = send_over_the_api(service, pat, grace)
    g = browsers.open("grace")
    sign_in(g, service, grace)
    box = f'#inbox [data-conversation-id="{first}"] [data-testid=reply-body]'
    wait(g, "a click in the reply box", lambda d: click(d, box))
    g.switch_to.active_element.send_keys("Half a thought")

    second = send_over_the_api(service, alan, grace)
    wait(g, "the new InMail, live", lambda d: item(d, "inbox", second) is not None)

    kept = wait(g, "the reply box drawn anew", lambda d: d.find_element(By.CSS_SELECTOR, box))
    assert kept.get_attribute("value") == "Half a thought"
    assert g.switch_to.active_element == kept
    g.switch_to.active_element.send_keys(", finished")
    assert kept.get_attribute("value") == "Half a thought, finished"


def test_connections_message_each_other_free_from_compose_and_in_their_thread(
    service: RunningService, browsers: Browsers
) -> None:
    ada = service.create_member("Ada Lovelace")
    alan = service.create_member("Alan Turing", plan="BASIC")  # a connection needs no plan
    service.connect(ada, alan)
    a, b = browsers.open("ada"), browsers.open("alan")
    sign_in(a, service, ada)
    sign_in(b, service, alan)

    a.find_element(By.ID, "compose-recipient").send_keys(alan.id)
    a.find_element(By.ID, "compose-lookup").click()
    wait(a, "Alan looked up", lambda d: text(d, "compose-recipient-name") == alan.name)
    reason = a.find_element(By.ID, "compose-reason").get_attribute("data-reason")
    assert reason == "RECIPIENT_IS_CONNECTION"
    assert text(a, "compose-send") == "Send message (free)"
    assert not a.find_element(By.ID, "compose-subject").is_enabled()  # messages have none
    a.find_element(By.ID, "compose-body").send_keys("Lunch?")
    a.find_element(By.ID, "compose-send").click()
    wait(a, "the message's result", lambda d: text(d, "compose-result") == "Message sent (free).")

    thread = direct_thread(b, "the thread in Alan's inbox, live")
    box = f'#inbox [data-conversation-id="{thread}"]'
    wait(b, "Ada's message", lambda d: "Lunch?" in getattr(item(d, "inbox", thread), "text", ""))
    wait(b, "a click in the thread's box", lambda d: click(d, f"{box} [data-testid=message-body]"))
    b.switch_to.active_element.send_keys("Yes, at noon")
    b.find_element(By.CSS_SELECTOR, f"{box} [data-testid=message-send]").click()

    wait(
        a,
        "Alan's answer in Ada's sent box, live",
        lambda d: (found := item(d, "sent", thread)) is not None and "Yes, at noon" in found.text,
    )
    assert text(a, "balance") == "5"  # free


def test_a_cancelled_subscription_shows_at_once_and_buys_nothing(
    service: RunningService, browsers: Browsers
) -> None:
    ada = service.create_member("Ada Lovelace")
    a = browsers.open("ada")
    sign_in(a, service, ada)
    assert a.find_element(By.ID, "buy-credits").is_enabled()

    service.post("mutation { cancelSubscription { errors { code } } }", ada.token)  # elsewhere

    wait(a, "the balance forfeited, live", lambda d: text(d, "balance") == "0")
    wait(
        a,
        "the cancelled subscription",
        lambda d: d.find_element(By.ID, "viewer-plan").get_attribute("data-status") == "CANCELED",
    )
    assert "cancelled" in text(a, "viewer-plan")
    assert not a.find_element(By.ID, "buy-credits").is_enabled()
    assert "cancelled" in text(a, "buy-price").lower()
