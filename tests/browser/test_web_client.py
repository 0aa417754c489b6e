"""The reference web client at /app, as two members use it in two browsers at once."""

from __future__ import annotations

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from browser.conftest import Browsers, Member, RunningService, wait

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
    assert text(b, "unread-count") == "0"

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
    wait(b, "the unread notification", lambda d: text(d, "unread-count") == "1")
    assert attributes(b, "#notifications li", "data-kind") == [("INMAIL_RECEIVED",)]

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
    wait(a, "Ada's notifications", lambda d: int(text(d, "unread-count")) == 2)
    kinds = set(attributes(a, "#notifications li", "data-kind"))
    assert kinds == {("RESPONSE_RECEIVED",), ("CREDITED_BACK",)}
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
    wait(buyer, "the purchase notification", lambda d: text(d, "unread-count") == "1")
