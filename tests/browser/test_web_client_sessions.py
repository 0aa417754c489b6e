"""The web client over a member's whole session: signing out and in within one tab, lists longer
than a page, and an outage of the service."""

from __future__ import annotations

import json
import uuid

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from browser.conftest import Browsers, Member, RunningService, wait
from browser.test_web_client import attributes, sign_in, submit_token, text
from harness.servers import ServiceProcess
from support import post_graphql

pytestmark = pytest.mark.browser

TOKEN_KEY = "inmail.token"  # where the client keeps the token (app.js)


def ada_signed_in(service: RunningService, browsers: Browsers) -> tuple[Member, WebDriver]:
    """Ada, a new member, signed in on a page of her own."""
    ada = service.create_member("Ada Lovelace")
    driver = browsers.open("ada")
    sign_in(driver, service, ada)
    return ada, driver


def value(driver: WebDriver, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).get_attribute("value"))


def buy(driver: WebDriver, quantity: int) -> None:
    field = driver.find_element(By.ID, "buy-quantity")
    field.clear()
    field.send_keys(str(quantity))
    driver.find_element(By.ID, "buy-credits").click()


def purchase(url: str, member: Member, quantity: int = 1) -> None:
    key = json.dumps(str(uuid.uuid4()))
    body, _ = post_graphql(
        url,
        f"mutation {{ purchaseInMailCredits(input: {{quantity: {quantity}, idempotencyKey: {key}}})"
        " { creditsLeft errors { code message } } }",
        member.token,
    )
    assert body["data"]["purchaseInMailCredits"]["errors"] == [], body


def test_signing_out_leaves_nothing_of_the_member_for_the_next_one_in_the_same_tab(
    service: RunningService, browsers: Browsers
) -> None:
    ada = service.create_member("Ada Lovelace")
    grace = service.create_member("Grace Hopper")
    margaret = service.create_member("Margaret Hamilton")
    driver = browsers.open("tab")
    sign_in(driver, service, ada)

    driver.find_element(By.ID, "compose-recipient").send_keys(grace.id)
    driver.find_element(By.ID, "compose-lookup").click()
    wait(driver, "the recipient's name", lambda d: text(d, "compose-recipient-name") == grace.name)
    assert driver.find_element(By.ID, "compose-send").is_enabled()
    driver.find_element(By.ID, "compose-subject").send_keys("Ada's private subject")
    driver.find_element(By.ID, "compose-body").send_keys("Ada's private draft")
    buy(driver, 1)
    wait(driver, "the purchase", lambda d: text(d, "buy-result").startswith("Bought 1"))
    wait(driver, "Ada's notification", lambda d: text(d, "unread-count") == "1")

    driver.find_element(By.ID, "sign-out").click()
    wait(driver, "the sign-in form", lambda d: d.find_element(By.ID, "token-input").is_displayed())
    assert value(driver, "token-input") == "", "Ada's token stays in the sign-in form"
    submit_token(driver, margaret)

    for field in ("compose-recipient", "compose-subject", "compose-body"):
        assert value(driver, field) == "", field
    assert text(driver, "compose-recipient-name") == "nobody yet"
    assert text(driver, "compose-credits") == "?"
    assert text(driver, "compose-reason") == ""
    assert text(driver, "compose-result") == ""
    assert text(driver, "buy-result") == ""
    assert not driver.find_element(By.ID, "compose-send").is_enabled(), "Ada's recipient is kept"
    wait(
        driver,
        "Margaret's empty notifications",
        lambda d: text(d, "notifications") == "Nothing yet.",
    )
    assert text(driver, "unread-count") == "0"
    assert "Ada" not in driver.find_element(By.ID, "signed-in").text

    # Margaret's own balance moves live; the compose window, which looked nobody up for her,
    # does not show a balance as if she had.
    buy(driver, 2)
    wait(driver, "Margaret's purchase", lambda d: text(d, "buy-result").startswith("Bought 2"))
    wait(driver, "the bought credits, live", lambda d: text(d, "balance") == "7")
    assert text(driver, "compose-credits") == "?"
    wait(driver, "Margaret's notification", lambda d: text(d, "unread-count") == "1")
    assert "Ada" not in driver.find_element(By.ID, "signed-in").text
    # And a send goes nowhere: there is no recipient until she looks one up.
    driver.execute_script("document.getElementById('compose-form').requestSubmit()")
    assert text(driver, "compose-result") == ""


def test_one_credit_is_one_credit_and_two_are_credits(
    service: RunningService, browsers: Browsers
) -> None:
    _ada, driver = ada_signed_in(service, browsers)
    buy(driver, 1)
    wait(driver, "the purchase", lambda d: text(d, "buy-result") != "")
    assert text(driver, "buy-result").startswith("Bought 1 credit; it expires ")
    wait(driver, "the notification", lambda d: text(d, "unread-count") == "1")
    assert text(driver, "notifications").startswith("Purchase completed: 1 credit ")
    buy(driver, 2)
    wait(driver, "the second purchase", lambda d: text(d, "buy-result").startswith("Bought 2 "))
    assert text(driver, "buy-result").startswith("Bought 2 credits; they expire ")
    wait(driver, "the second notification", lambda d: text(d, "unread-count") == "2")
    assert text(driver, "notifications").startswith("Purchase completed: 2 credits ")


def test_notifications_past_the_first_page_are_reached_with_show_more_and_stay_live(
    service: RunningService, browsers: Browsers
) -> None:
    ada = service.create_member("Ada Lovelace", plan="PREMIUM_BUSINESS")  # holds up to 45
    for _ in range(23):
        purchase(service.url, ada)
    driver = browsers.open("ada")
    sign_in(driver, service, ada)

    def shown(d: WebDriver) -> int:
        return len(d.find_elements(By.CSS_SELECTOR, "#notifications [data-testid=notification]"))

    wait(driver, "the first page", lambda d: shown(d) == 20)
    assert text(driver, "notifications-shown") == "Showing 20 of 23."
    assert text(driver, "unread-count") == "23"
    driver.find_element(By.ID, "notifications-more").click()
    wait(driver, "the second page", lambda d: shown(d) == 23)
    assert not driver.find_element(By.ID, "notifications-more").is_displayed()
    assert text(driver, "notifications-shown") == ""
    ids = attributes(driver, "#notifications li", "data-notification-id")
    assert len(set(ids)) == 23, "every notification once"

    # A live update loads the list again, keeping the page appended.
    purchase(service.url, ada, 2)
    wait(driver, "the new notification, live", lambda d: shown(d) == 24)
    assert text(driver, "notifications").startswith("Purchase completed: 2 credits ")
    assert text(driver, "unread-count") == "24"


def stop_until_disconnected(driver: WebDriver, service: RunningService) -> None:
    service.process.stop()
    wait(
        driver,
        "the lost connection",
        lambda d: d.find_element(By.ID, "live-status").get_attribute("data-state") != "connected",
    )


def come_back(driver: WebDriver, service: RunningService) -> None:
    """Start the service again: the page must be live again within seconds (a capped backoff,
    not waits of 16 s, 32 s, ...)."""
    service.process.start()
    service.process.wait_ready()
    WebDriverWait(driver, 8).until(
        lambda d: d.find_element(By.ID, "live-status").get_attribute("data-state") == "connected",
        message="waited 8 s for the live connection after the service came back",
    )


def test_after_an_outage_the_client_is_live_again_within_seconds_and_shows_what_it_missed(
    service: RunningService, browsers: Browsers
) -> None:
    grace = service.create_member("Grace Hopper")
    ada, driver = ada_signed_in(service, browsers)
    wait(driver, "Ada's empty inbox", lambda d: text(d, "inbox") == "Nothing yet.")
    stop_until_disconnected(driver, service)

    # Meanwhile, another process of the service (same database) takes Grace's InMail: no
    # event of it reaches Ada's page, whose service is down.
    other = ServiceProcess.serve(service.env, service.process.log_path.with_name("other.log"))
    other.start()
    try:
        other.wait_ready()
        body, _ = post_graphql(
            other.url,
            f"mutation {{ sendInMail(input: {{recipientId: {json.dumps(ada.id)}, "
            'subject: "While you were away", body: "Hello", idempotencyKey: "grace-1"}) '
            "{ conversation { id } errors { code } } }",
            grace.token,
        )
        assert body["data"]["sendInMail"]["errors"] == [], body
        conversation_id = body["data"]["sendInMail"]["conversation"]["id"]
    finally:
        other.stop()

    come_back(driver, service)
    wait(
        driver,
        "the missed InMail in the inbox",
        lambda d: (
            attributes(d, "#inbox [data-testid=inbox-item]", "data-conversation-id")
            == [(conversation_id,)]
        ),
    )
    wait(driver, "the missed notification", lambda d: text(d, "unread-count") == "1")
    assert text(driver, "balance") == "5"
    assert driver.execute_script("return window.loadedOnce") is True, "the page reloaded"


def test_a_purchase_during_an_outage_says_to_check_the_balance_until_the_service_is_back(
    service: RunningService, browsers: Browsers
) -> None:
    _ada, driver = ada_signed_in(service, browsers)
    stop_until_disconnected(driver, service)
    buy(driver, 1)
    wait(driver, "the purchase's failure", lambda d: text(d, "buy-result") != "")
    failure = text(driver, "buy-result").lower()
    assert "could not reach the service" in failure
    assert "may or may not" in failure
    assert "check your balance" in failure
    assert "failed to fetch" not in driver.find_element(By.ID, "signed-in").text.lower()

    come_back(driver, service)
    wait(driver, "the outage message cleared", lambda d: text(d, "buy-result") == "")
    assert text(driver, "status") == ""
    assert text(driver, "balance") == "5"


def test_the_reconnect_backoff_is_capped_at_a_few_seconds_with_jitter(
    service: RunningService, browsers: Browsers
) -> None:
    driver = browsers.open("page")
    driver.get(f"{service.url}/app")
    wait(
        driver,
        "the client's script",
        lambda d: d.execute_script("return document.body.dataset.ready"),
    )
    delays: list[list[int]] = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "import('/static/app/api.js').then((api) => done("
        "  [0, 1, 2, 3, 5, 8, 20, 100, 999].map((n) =>"
        "    Array.from({length: 50}, () => api.retryDelay(n)))"
        ")).catch((error) => done(String(error)));"
    )
    assert isinstance(delays, list), delays
    for waits in delays:
        assert all(0 < wait_ms <= 3000 for wait_ms in waits), waits
        assert len(set(waits)) > 1, "no jitter"
    assert max(delays[0]) <= 300, "the first retry is quick"
    assert min(delays[-1]) >= 1000, "a long outage is not hammered"


def test_a_reload_while_the_service_is_out_of_reach_keeps_the_tab_signed_in(
    service: RunningService, browsers: Browsers
) -> None:
    ada, driver = ada_signed_in(service, browsers)
    # The page's own files load; its requests to the API fail as an outage's would.
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": [f"{service.url}/graphql"]})
    driver.refresh()
    wait(driver, "the outage said", lambda d: "signed in again" in text(d, "status"))
    assert driver.execute_script(f"return sessionStorage.getItem({TOKEN_KEY!r})") == ada.token

    driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})

    wait(driver, "Ada signed in again", lambda d: text(d, "viewer-name") == ada.name)
