"""GraphiQL on GET /graphql runs on the service's own files: nothing is fetched from elsewhere."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from browser.conftest import Browsers, RunningService, browser_log, wait

pytestmark = pytest.mark.browser

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
NETWORK_SCHEMES = {"http", "https", "ws", "wss", "ftp"}


def requested_urls(driver: WebDriver) -> list[str]:
    """Every URL the page asked for, from Chromium's network events."""
    urls = []
    for entry in browser_log(driver, "performance"):
        message: dict[str, Any] = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
        elif message.get("method") == "Network.webSocketCreated":
            urls.append(message["params"]["url"])
    return urls


HEADERS = ".graphiql-editor-tool .graphiql-editor:not(.hidden)"
QUERY = ".graphiql-query-editor"


def set_editor(driver: WebDriver, container: str, value: str) -> None:
    """Replace the text of one of GraphiQL's CodeMirror editors, as typing would."""
    driver.execute_script(
        "document.querySelector(arguments[0] + ' .CodeMirror').CodeMirror.setValue(arguments[1])",
        container,
        value,
    )


def editor_text(driver: WebDriver, container: str) -> str:
    """The text of one of GraphiQL's CodeMirror editors; empty while there is none."""
    text: str = driver.execute_script(
        "const found = document.querySelector(arguments[0] + ' .CodeMirror');"
        "return found ? found.CodeMirror.getValue() : '';",
        container,
    )
    return text


def result(driver: WebDriver) -> str:
    return editor_text(driver, ".result-window")


def open_graphiql(driver: WebDriver, service: RunningService) -> None:
    driver.get(f"{service.url}/graphql")
    wait(
        driver,
        "GraphiQL's run button",
        lambda d: d.find_elements(By.CLASS_NAME, "graphiql-execute-button"),
    )


def graphiql_window(service: RunningService, browsers: Browsers) -> WebDriver:
    """A new browser window with the service's GraphiQL loaded."""
    driver = browsers.open("graphiql")
    open_graphiql(driver, service)
    return driver


def use_token(driver: WebDriver, token: str) -> None:
    """Put the bearer token in GraphiQL's Headers tab, as a user pastes it."""
    set_editor(driver, HEADERS, json.dumps({"Authorization": f"Bearer {token}"}))


def run(driver: WebDriver, query: str) -> None:
    """Put `query` in the query editor and run it."""
    set_editor(driver, QUERY, query)
    driver.find_element(By.CLASS_NAME, "graphiql-execute-button").click()


def test_graphiql_loads_only_from_the_service_and_runs_a_query_and_a_subscription_with_a_token(
    service: RunningService, browsers: Browsers
) -> None:
    ada = service.create_member("Ada Lovelace")
    driver = graphiql_window(service, browsers)

    sources = driver.execute_script(
        "return [...document.querySelectorAll('script[src], link[href]')].map(e => e.src || e.href)"
    )
    assert sources, "the page loads its scripts and styles"
    for source in sources:
        assert source.startswith("data:") or source.startswith(service.url + "/"), source
    headers = driver.execute_script(
        "return document.querySelector(arguments[0] + ' .CodeMirror').CodeMirror.getValue()",
        HEADERS,
    )
    assert "inmail token --member" in headers, "the Headers tab shows where a token comes from"

    use_token(driver, ada.token)
    run(driver, "{ viewer { name inmailBalance } }")
    wait(driver, "the query's answer", lambda d: "Ada Lovelace" in result(d))
    answer = json.loads(result(driver))
    assert set(answer) == {"data", "extensions"}, answer
    assert answer["data"] == {"viewer": {"name": "Ada Lovelace", "inmailBalance": 5}}
    assert answer["extensions"]["cost"]["requestedQueryCost"] == 1, answer

    run(driver, "subscription { balanceChanged { balance } }")
    wait(driver, "the subscription's first update", lambda d: '"balance": 5' in result(d))

    urls = requested_urls(driver)
    assert any(url.endswith("/static/graphiql/graphiql.min.js") for url in urls)
    assert any(url.startswith("ws://") for url in urls), "the subscription ran over a websocket"
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme in NETWORK_SCHEMES:  # not data:, nor the browser's own chrome:// pages
            assert parts.hostname in LOOPBACK, f"a request left the machine: {url}"
    console = browser_log(driver, "browser")
    assert [e for e in console if "Content Security Policy" in e["message"]] == [], console
