"""The web client over a member's whole session: signing out and in within one tab, lists longer
than a page, and an outage of the service."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from browser.conftest import Browsers, Member, RunningService, wait
from browser.test_web_client import attributes, item, sign_in, submit_token, text
from harness.servers import ServiceProcess
from support import post_graphql, serving

pytestmark = pytest.mark.browser

TOKEN_KEY = "inmail.token"  # where the client keeps the token (app.js)


def ada_signed_in(service: RunningService, browsers: Browsers) -> tuple[Member, WebDriver]:
    """Ada, a new member, signed in on a page of her own."""
    ada = service.create_member("Ada Lovelace")
    driver = browsers.open("ada")
    sign_in(driver, service, ada)
    return ada, driver


def only_her_first_allotment(driver: WebDriver) -> bool:
    """Whether the notifications shown are just the one of a new member's first allotment."""
    return attributes(driver, "#notifications li", "data-kind") == [("RENEWED",)]


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
    wait(driver, "Ada's notification", lambda d: text(d, "unread-count") == "2")

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
        "Margaret's own notifications",
        only_her_first_allotment,
    )
    assert "Purchase" not in text(driver, "notifications"), "Ada's purchase is not shown"
    assert text(driver, "unread-count") == "1"
    assert "Ada" not in driver.find_element(By.ID, "signed-in").text

    # Margaret's own balance moves live; the compose window, which looked nobody up for her,
    # does not show a balance as if she had.
    buy(driver, 2)
    wait(driver, "Margaret's purchase", lambda d: text(d, "buy-result").startswith("Bought 2"))
    wait(driver, "the bought credits, live", lambda d: text(d, "balance") == "7")
    assert text(driver, "compose-credits") == "?"
    wait(driver, "Margaret's notification", lambda d: text(d, "unread-count") == "2")
    assert "Ada" not in driver.find_element(By.ID, "signed-in").text
    # And a send goes nowhere: there is no recipient until she looks one up.
    driver.execute_script("document.getElementById('compose-form').requestSubmit()")
    assert text(driver, "compose-result") == ""


def send_inmail(url: str, sender: Member, recipient: Member, subject: str) -> str:
    """The id of a new InMail from `sender` to `recipient`, sent through the API."""
    key = json.dumps(str(uuid.uuid4()))
    body, _ = post_graphql(
        url,
        f"mutation {{ sendInMail(input: {{recipientId: {json.dumps(recipient.id)}, "
        f'subject: {json.dumps(subject)}, body: "Hello", idempotencyKey: {key}}}) '
        "{ conversation { id } errors { code } } }",
        sender.token,
    )
    assert body["data"]["sendInMail"]["errors"] == [], body
    return str(body["data"]["sendInMail"]["conversation"]["id"])


def test_one_credit_is_one_credit_and_two_are_credits(
    service: RunningService, browsers: Browsers
) -> None:
    _ada, driver = ada_signed_in(service, browsers)
    buy(driver, 1)
    wait(driver, "the purchase", lambda d: text(d, "buy-result") != "")
    assert text(driver, "buy-result").startswith("Bought 1 credit; it expires ")
    wait(driver, "the notification", lambda d: text(d, "unread-count") == "2")
    assert text(driver, "notifications").startswith("Purchase completed: 1 credit ")
    buy(driver, 2)
    wait(driver, "the second purchase", lambda d: text(d, "buy-result").startswith("Bought 2 "))
    assert text(driver, "buy-result").startswith("Bought 2 credits; they expire ")
    wait(driver, "the second notification", lambda d: text(d, "unread-count") == "3")
    assert text(driver, "notifications").startswith("Purchase completed: 2 credits ")


def notifications_shown(driver: WebDriver) -> int:
    return len(driver.find_elements(By.CSS_SELECTOR, "#notifications [data-testid=notification]"))


def ada_with_23_notifications(
    service: RunningService, browsers: Browsers
) -> tuple[Member, WebDriver]:
    """Ada with 23 notifications (her first allotment, and 22 purchases), signed in, her first
    page of 20 shown."""
    ada = service.create_member("Ada Lovelace", plan="PREMIUM_BUSINESS")  # holds up to 45
    for _ in range(22):
        purchase(service.url, ada)
    driver = browsers.open("ada")
    sign_in(driver, service, ada)
    wait(driver, "the first page", lambda d: notifications_shown(d) == 20)
    return ada, driver


def test_notifications_past_the_first_page_are_reached_with_show_more_and_stay_live(
    service: RunningService, browsers: Browsers
) -> None:
    ada, driver = ada_with_23_notifications(service, browsers)
    shown = notifications_shown

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


# Rewrites the `after` cursor of the next request that sends one into a cursor of no list (as a
# cursor made before an upgrade reads to the service after it), once.
STALE_NEXT_CURSOR = """
const real = window.fetch;
window.staleCursorSent = false;
window.fetch = (url, init) => {
  if (!window.staleCursorSent && init && /"after":"/.test(init.body)) {
    window.staleCursorSent = true;
    init = { ...init, body: init.body.replace(/"after":"[^"]*"/, '"after":"W10="') };
  }
  return real(url, init);
};
"""


def test_show_more_with_a_cursor_the_service_no_longer_takes_loads_the_list_again(
    service: RunningService, browsers: Browsers
) -> None:
    _, driver = ada_with_23_notifications(service, browsers)
    shown = notifications_shown

    driver.execute_script(STALE_NEXT_CURSOR)
    driver.find_element(By.ID, "notifications-more").click()

    wait(driver, "every notification, loaded again", lambda d: shown(d) == 23)
    assert driver.execute_script("return window.staleCursorSent") is True
    assert len(set(attributes(driver, "#notifications li", "data-notification-id"))) == 23
    assert not driver.find_element(By.ID, "notifications-more").is_displayed()


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


def inmail_while_down(
    driver: WebDriver, service: RunningService, sender: Member, recipient: Member
) -> str:
    """An outage of the page's service, during which another process of the service (same
    database) takes the sender's InMail: no event of it reaches the page. The conversation's id."""
    stop_until_disconnected(driver, service)
    other = ServiceProcess.serve(service.env, service.process.log_path.with_name("other.log"))
    other.start()
    try:
        other.wait_ready()
        body, _ = post_graphql(
            other.url,
            f"mutation {{ sendInMail(input: {{recipientId: {json.dumps(recipient.id)}, "
            'subject: "While you were away", body: "Hello", idempotencyKey: "grace-1"}) '
            "{ conversation { id } errors { code } } }",
            sender.token,
        )
        assert body["data"]["sendInMail"]["errors"] == [], body
        conversation_id: str = body["data"]["sendInMail"]["conversation"]["id"]
        return conversation_id
    finally:
        other.stop()


def shows_the_inmail_missed_while_down(
    driver: WebDriver, service: RunningService, sender: Member, recipient: Member
) -> None:
    """An InMail sent while the recipient's page is cut off from its service is in its inbox
    once the service is back."""
    conversation_id = inmail_while_down(driver, service, sender, recipient)
    come_back(driver, service)
    wait(
        driver,
        "the missed InMail in the inbox",
        lambda d: (
            attributes(d, "#inbox [data-testid=inbox-item]", "data-conversation-id")
            == [(conversation_id,)]
        ),
    )


def test_after_an_outage_the_client_is_live_again_within_seconds_and_shows_what_it_missed(
    service: RunningService, browsers: Browsers
) -> None:
    grace = service.create_member("Grace Hopper")
    ada, driver = ada_signed_in(service, browsers)
    wait(driver, "Ada's empty inbox", lambda d: text(d, "inbox") == "Nothing yet.")
    shows_the_inmail_missed_while_down(driver, service, grace, ada)
    wait(driver, "the missed notification", lambda d: text(d, "unread-count") == "2")
    assert text(driver, "balance") == "5"
    assert driver.execute_script("return window.loadedOnce") is True, "the page reloaded"


def on_each_message(body: str) -> str:
    """A page script that runs `body` on each websocket message the page's client receives
    (`event`, which `body` may replace) before the client sees it."""
    return f"""
const onmessage = Object.getOwnPropertyDescriptor(WebSocket.prototype, "onmessage");
Object.defineProperty(WebSocket.prototype, "onmessage", {{
  configurable: true,
  get() {{ return onmessage.get.call(this); }},
  set(handler) {{
    onmessage.set.call(this, handler && function (event) {{
{body}
      return handler.call(this, event);
    }});
  }},
}});
"""


# The page's traffic, watched from inside the page: every HTTP request it makes (window.fetch),
# every websocket message it sends or receives, in one timeline. A test can hold back the
# subscriptions the page sends (as a slow network would: the server has not got them yet) or
# the answers to its HTTP requests, and let them go when it chooses.
WATCH_THE_WIRE = (
    """
const wire = (window.wire = {
  log: [], held: [], answers: [], inFlight: 0, lastActivity: performance.now(),
  holdSubscriptions: false, holdAnswers: false,
});
const note = (entry) => { wire.log.push(entry); wire.lastActivity = performance.now(); };
const realFetch = window.fetch;
window.fetch = async function (url, init) {
  const body = init && typeof init.body === "string" ? init.body : "";
  note({ what: "fetch", body });
  wire.inFlight++;
  try {
    const response = await realFetch.call(window, url, init);
    if (wire.holdAnswers) await new Promise((resolve) => wire.answers.push(resolve));
    return response;
  } finally {
    wire.inFlight--;
    wire.lastActivity = performance.now();
  }
};
const realSend = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  let type = null;
  try { type = JSON.parse(data).type; } catch (notJson) {}
  if (type === "subscribe" && wire.holdSubscriptions) {
    wire.held.push([this, data]);
    wire.lastActivity = performance.now();
    return;
  }
  note({ what: "send", type, data: String(data) });
  return realSend.call(this, data);
};
"""
    + on_each_message(
        """\
      let type = null;
      try { type = JSON.parse(event.data).type; } catch (notJson) {}
      note({ what: "receive", type, data: String(event.data) });"""
    )
    + """wire.release = () => {
  wire.holdSubscriptions = false;
  wire.holdAnswers = false;
  for (const [socket, data] of wire.held.splice(0)) {
    note({ what: "send", type: "subscribe", data: String(data) });
    realSend.call(socket, data);
  }
  for (const resolve of wire.answers.splice(0)) resolve();
};
"""
)


def watch_the_wire(driver: WebDriver) -> None:
    driver.execute_script(WATCH_THE_WIRE)


def wire(driver: WebDriver, expression: str) -> Any:
    return driver.execute_script(f"return window.wire.{expression}")


def quiet(driver: WebDriver, seconds: float = 1.0) -> bool:
    """No HTTP request of the page under way, and none started or ended for `seconds`."""
    return bool(
        driver.execute_script(
            "return window.wire.inFlight === 0"
            " && performance.now() - window.wire.lastActivity > arguments[0]",
            seconds * 1000,
        )
    )


def reconnect_with(driver: WebDriver, service: RunningService, **hold: bool) -> None:
    """An outage; the service back, with the page's traffic held as `hold` says (keys of
    `wire`: holdSubscriptions, holdAnswers), and watched from a fresh timeline."""
    stop_until_disconnected(driver, service)
    settings = ", ".join(f"{name}: {json.dumps(value)}" for name, value in hold.items())
    driver.execute_script(f"Object.assign(window.wire, {{log: [], {settings}}})")
    come_back(driver, service)


def wire_step(entry: dict[str, str]) -> str | None:
    """A timeline entry as "subscribe" (sent), "balance" (a balance update received), "fetch"
    (an HTTP request made), or None for anything else."""
    if entry["what"] == "send" and entry["type"] == "subscribe":
        return "subscribe"
    if entry["what"] == "receive" and "balanceChanged" in entry["data"]:
        return "balance"
    return "fetch" if entry["what"] == "fetch" else None


def test_an_event_committed_before_the_subscriptions_are_live_again_shows_after_a_reconnect(
    service: RunningService, browsers: Browsers
) -> None:
    """The race of a reconnect made wide: the page is connected again but the server has not
    got its subscriptions yet (held back in the page) when a purchase commits. The page
    subscribes first and loads what it shows second, so the purchase's notification shows."""
    ada, driver = ada_signed_in(service, browsers)
    wait(driver, "Ada's first allotment alone", only_her_first_allotment)
    watch_the_wire(driver)
    reconnect_with(driver, service, holdSubscriptions=True)
    wait(driver, "the three subscriptions, held", lambda d: wire(d, "held.length") == 3)
    wait(driver, "the page at rest", quiet)  # whatever it loads before subscribing, it has

    purchase(service.url, ada)  # a notification, and one credit more
    driver.execute_script("window.wire.release()")
    wait(driver, "the purchase's notification", lambda d: text(d, "unread-count") == "2")
    assert text(driver, "notifications").startswith("Purchase completed: 1 credit ")
    wait(driver, "the balance", lambda d: text(d, "balance") == "6")
    assert driver.execute_script("return window.loadedOnce") is True, "the page reloaded"

    # The order on the wire: all three subscriptions, the balance as of now on the new
    # connection, and only then any HTTP request.
    steps = [step for entry in wire(driver, "log") if (step := wire_step(entry))]
    first_fetch = steps.index("fetch")
    assert steps[:first_fetch].count("subscribe") == 3, steps
    assert "balance" in steps[:first_fetch], steps


def test_an_event_committed_before_the_first_subscriptions_are_live_shows_after_sign_in(
    service: RunningService, browsers: Browsers
) -> None:
    """The same race at sign-in: the page has loaded Ada's lists, but the server has not got
    her subscriptions yet (held back in the page) when a purchase commits. Once they are live
    the lists are loaded again, so the purchase's notification shows."""
    ada = service.create_member("Ada Lovelace")
    driver = browsers.open("ada")
    driver.get(f"{service.url}/app")
    wait(
        driver,
        "the client's script",
        lambda d: d.execute_script("return document.body.dataset.ready"),
    )
    watch_the_wire(driver)
    driver.execute_script("window.wire.holdSubscriptions = true")
    submit_token(driver, ada)
    wait(driver, "the three subscriptions, held", lambda d: wire(d, "held.length") == 3)
    wait(driver, "Ada's first allotment alone", only_her_first_allotment)
    wait(driver, "the page at rest", quiet)

    purchase(service.url, ada)
    driver.execute_script("window.wire.release()")
    wait(driver, "the purchase's notification", lambda d: text(d, "unread-count") == "2")
    assert text(driver, "notifications").startswith("Purchase completed: 1 credit ")
    wait(driver, "the balance", lambda d: text(d, "balance") == "6")


# The server ending the balance's subscription with an `error` message (as graphql-ws does
# when the subscription's stream raises), once `window.failBalance` is set: the page's client
# then never sends that subscription again.
END_THE_BALANCE_SUBSCRIPTION = on_each_message(
    """\
      let message = null;
      try { message = JSON.parse(event.data); } catch (notJson) {}
      if (window.failBalance && message && message.type === "next"
          && event.data.includes("balanceChanged")) {
        window.failBalance = false;
        const payload = [{ message: "the balance stream failed" }];
        event = new MessageEvent("message", {
          data: JSON.stringify({ id: message.id, type: "error", payload }),
        });
      }"""
)


def test_after_the_balance_subscription_ended_a_reconnect_still_shows_what_was_missed(
    service: RunningService, browsers: Browsers
) -> None:
    """No balance update can say the subscriptions are live again: the page reloads anyway."""
    grace = service.create_member("Grace Hopper")
    ada = service.create_member("Ada Lovelace")
    driver = browsers.open("ada")
    driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": END_THE_BALANCE_SUBSCRIPTION}
    )
    sign_in(driver, service, ada)
    wait(driver, "Ada's empty inbox", lambda d: text(d, "inbox") == "Nothing yet.")
    driver.execute_script("window.failBalance = true")
    purchase(service.url, ada)
    wait(driver, "the subscription's end", lambda d: "balance stream failed" in text(d, "status"))

    shows_the_inmail_missed_while_down(driver, service, grace, ada)


def test_a_slow_answer_after_a_reconnect_never_puts_back_an_older_balance(
    service: RunningService, browsers: Browsers
) -> None:
    """Every HTTP answer after the reconnect is held back until a purchase has shown live: none
    of them may put back the balance as it was before the purchase."""
    ada, driver = ada_signed_in(service, browsers)
    watch_the_wire(driver)
    reconnect_with(driver, service, holdAnswers=True)
    wait(
        driver,
        "the balance on the new connection",
        lambda d: d.execute_script(
            "return window.wire.log.some((e) => e.what === 'receive'"
            " && e.data.includes('balanceChanged'))"
        ),
    )
    purchase(service.url, ada)
    wait(driver, "the purchase, live", lambda d: text(d, "balance") == "6")
    driver.execute_script("window.wire.release()")
    wait(driver, "the purchase's notification", lambda d: text(d, "unread-count") == "2")
    wait(driver, "the page at rest", quiet)
    assert text(driver, "balance") == "6", "an answer read before the purchase was shown after it"


def outage_time(element: WebElement) -> datetime:
    """When the request an outage message is about was made, as the message says."""
    shown = element.find_element(By.CSS_SELECTOR, "time[data-testid=unreachable-at]")
    assert shown.text, "the time is shown"
    return datetime.fromisoformat(str(shown.get_attribute("datetime")).replace("Z", "+00:00"))


def test_a_purchase_during_an_outage_still_says_to_check_the_balance_once_the_service_is_back(
    service: RunningService, browsers: Browsers
) -> None:
    ada, driver = ada_signed_in(service, browsers)
    stop_until_disconnected(driver, service)
    before = datetime.now(UTC)
    buy(driver, 1)
    wait(driver, "the purchase's failure", lambda d: text(d, "buy-result") != "")
    after = datetime.now(UTC)
    failure = text(driver, "buy-result").lower()
    assert "could not reach the service" in failure
    assert "may or may not" in failure
    assert "check your balance" in failure
    assert "failed to fetch" not in driver.find_element(By.ID, "signed-in").text.lower()

    # Back and live (a purchase made elsewhere arrives live): the member who looks now still
    # reads that the purchase may not have gone through, and when it was tried; the status line
    # and the live status say nothing of the outage any more.
    come_back(driver, service)
    purchase(service.url, ada, 2)
    wait(driver, "a purchase made elsewhere, live", lambda d: text(d, "balance") == "7")
    wait(driver, "the missed notification", lambda d: text(d, "unread-count") == "2")
    result = driver.find_element(By.ID, "buy-result")
    assert "check your balance" in result.text.lower(), "the outage message was cleared"
    assert before - timedelta(seconds=1) <= outage_time(result) <= after + timedelta(seconds=1)
    assert text(driver, "status") == ""
    assert text(driver, "live-status") == "live"

    result.find_element(By.CSS_SELECTOR, "[data-testid=dismiss]").click()
    wait(driver, "the message dismissed", lambda d: text(d, "buy-result") == "")

    # The next purchase answers for itself: an unanswered one says so, an answered one replaces
    # that message with its result.
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": [f"{service.url}/graphql"]})
    buy(driver, 1)
    wait(
        driver,
        "the purchase's failure",
        lambda d: "check your balance" in text(d, "buy-result").lower(),
    )
    driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
    buy(driver, 1)
    wait(driver, "the next purchase", lambda d: text(d, "buy-result").startswith("Bought 1 "))
    assert "could not reach" not in text(driver, "buy-result").lower()


def test_a_response_a_send_and_a_mark_read_that_got_no_answer_stay_said_after_the_outage(
    service: RunningService, browsers: Browsers
) -> None:
    grace = service.create_member("Grace Hopper")
    margaret = service.create_member("Margaret Hamilton")
    ada, driver = ada_signed_in(service, browsers)
    grace_to_ada = send_inmail(service.url, grace, ada, "Compilers")
    wait(driver, "Grace's InMail", lambda d: item(d, "inbox", grace_to_ada) is not None)
    wait(driver, "its notification", lambda d: text(d, "unread-count") == "2")
    driver.find_element(By.ID, "compose-recipient").send_keys(margaret.id)
    driver.find_element(By.ID, "compose-lookup").click()
    wait(driver, "the recipient", lambda d: text(d, "compose-recipient-name") == margaret.name)
    driver.find_element(By.ID, "compose-subject").send_keys("Apollo")
    driver.find_element(By.ID, "compose-body").send_keys("About the guidance computer")

    stop_until_disconnected(driver, service)
    graces = f'#inbox [data-conversation-id="{grace_to_ada}"]'
    respond_result = f"{graces} [data-testid=respond-result]"
    driver.find_element(By.CSS_SELECTOR, f"{graces} [data-testid=respond-INTERESTED]").click()
    driver.find_element(By.ID, "compose-send").click()
    driver.find_element(By.ID, "mark-all-read").click()
    said = {
        "respond": "may or may not have been recorded",
        "send": "may or may not have been sent",
        "read": "may not have been marked read",
    }

    def shown(d: WebDriver) -> dict[str, str]:
        found = d.find_elements(By.CSS_SELECTOR, respond_result)
        return {
            "respond": found[0].text if found else "",
            "send": text(d, "compose-result"),
            "read": text(d, "notifications-result"),
        }

    wait(driver, "the three failures", lambda d: all(said[k] in v for k, v in shown(d).items()))

    # Back, reloaded, and the inbox drawn anew by a live InMail: each message is still there.
    come_back(driver, service)
    margaret_to_ada = send_inmail(service.url, margaret, ada, "Guidance")
    wait(driver, "Margaret's InMail, live", lambda d: item(d, "inbox", margaret_to_ada) is not None)
    wait(driver, "the notifications reloaded", lambda d: text(d, "unread-count") == "3")
    messages = shown(driver)
    for action, words in said.items():
        assert words in messages[action], (action, messages)
        assert "tried at" in messages[action], (action, messages)
    assert text(driver, "status") == ""
    # Looking the recipient up again is no answer to the send.
    driver.find_element(By.ID, "compose-recipient").clear()
    driver.find_element(By.ID, "compose-recipient").send_keys(grace.id)
    driver.find_element(By.ID, "compose-lookup").click()
    wait(driver, "the lookup", lambda d: text(d, "compose-recipient-name") == grace.name)
    assert said["send"] in text(driver, "compose-result")

    # Dismissed, each is gone, and stays gone when the inbox is drawn again.
    driver.find_element(By.CSS_SELECTOR, f"{respond_result} [data-testid=dismiss]").click()
    driver.find_element(By.CSS_SELECTOR, "#compose-result [data-testid=dismiss]").click()
    driver.find_element(By.CSS_SELECTOR, "#notifications-result [data-testid=dismiss]").click()
    assert shown(driver) == {"respond": "", "send": "", "read": ""}
    purchase(service.url, ada)
    wait(driver, "a live notification", lambda d: text(d, "unread-count") == "4")
    assert shown(driver) == {"respond": "", "send": "", "read": ""}


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


# Counts the answers of the page's requests that say the operation never ran and when to try
# it again (`retryAfterSeconds`), without touching what the page reads of them.
COUNT_REFUSALS = """
const real = window.fetch;
window.refusedBeforeRunning = 0;
window.fetch = async (url, init) => {
  const response = await real(url, init);
  const body = await response.clone().json().catch(() => null);
  if (body && body.data == null && body.errors
      && body.errors.some((e) => e.extensions && e.extensions.retryAfterSeconds)) {
    window.refusedBeforeRunning += 1;
  }
  return response;
};
"""


def test_loads_refused_before_running_are_sent_again_when_the_service_says(
    service: RunningService, browsers: Browsers, tmp_path: Path
) -> None:
    """A process of the service that lets one member have only one request in flight at a time
    refuses the page's overlapping loads at sign-in before running them, saying when to try
    again: the page sends each again then, and shows the member's whole page, with no error."""
    ada = service.create_member("Ada Lovelace")
    for _ in range(2):
        purchase(service.url, ada)
    one_at_a_time = ServiceProcess.serve(
        {**service.env, "INMAIL_MAX_COST_IN_FLIGHT_PER_MEMBER": "1"}, tmp_path / "one.log"
    )
    with serving(one_at_a_time):
        driver = browsers.open("ada")
        driver.get(f"{one_at_a_time.url}/app")
        wait(
            driver,
            "the client's script",
            lambda d: d.execute_script("return document.body.dataset.ready"),
        )
        driver.execute_script(COUNT_REFUSALS)
        submit_token(driver, ada)
        wait(driver, "Ada's three notifications", lambda d: notifications_shown(d) == 3)
        assert driver.execute_script("return window.refusedBeforeRunning") > 0
        assert text(driver, "status") == ""
        assert text(driver, "balance") == "7"
