"""GraphiQL and the bearer token: never kept in the browser's storage, and a refused token is
told at once."""

from __future__ import annotations

import json

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from browser.conftest import Browsers, RunningService, wait
from browser.test_graphiql import (
    HEADERS,
    QUERY,
    editor_text,
    graphiql_window,
    open_graphiql,
    result,
    run,
    set_editor,
    use_token,
)

pytestmark = pytest.mark.browser


def stored(driver: WebDriver) -> dict[str, str]:
    """Every key and value of localStorage and sessionStorage."""
    values: dict[str, str] = driver.execute_script(
        "const all = {};"
        "for (const [name, store] of [['local', localStorage], ['session', sessionStorage]])"
        "  for (let i = 0; i < store.length; i++)"
        "    all[name + ':' + store.key(i)] = store.getItem(store.key(i));"
        "return all;"
    )
    return values


def test_graphiql_keeps_its_history_but_never_stores_the_token(
    service: RunningService, browsers: Browsers
) -> None:
    ada = service.create_member("Ada Lovelace")
    driver = graphiql_window(service, browsers)
    use_token(driver, ada.token)
    run(driver, "{ viewer { name inmailBalance } }")
    wait(driver, "the query's answer", lambda d: "Ada Lovelace" in result(d))
    run(driver, "{ viewer { id name } }")
    wait(driver, "the second answer", lambda d: ada.id in result(d))
    # The history is kept (so the test looks where the token used to be), and GraphiQL's
    # tab state, written 500 ms after a change, has been saved since the last run.
    wait(
        driver,
        "both runs in the stored history",
        lambda d: "viewer { id name }" in (stored(d).get("local:graphiql:queries") or ""),
    )
    wait(
        driver,
        "the tab state saved since the last run",
        lambda d: "viewer { id name }" in (stored(d).get("local:graphiql:tabState") or ""),
    )

    everything = json.dumps(stored(driver))
    assert ada.token not in everything, "the token was written to the browser's storage"
    assert ada.token[-24:] not in everything
    assert "Bearer" not in everything

    # The history still restores the query itself.
    history = json.loads(stored(driver)["local:graphiql:queries"])["queries"]
    assert {"{ viewer { name inmailBalance } }", "{ viewer { id name } }"} <= {
        item["query"] for item in history
    }
    assert all(item.get("headers") is None for item in history)


def test_graphiql_restores_its_tabs_after_a_reload_without_their_token(
    service: RunningService, browsers: Browsers
) -> None:
    """The saved tabs stay GraphiQL's to read: each keeps its "headers" key (null), without
    which GraphiQL drops them all for one default tab."""
    ada = service.create_member("Ada Lovelace")
    driver = graphiql_window(service, browsers)
    use_token(driver, ada.token)
    run(driver, "{ now }")
    driver.find_element(By.CLASS_NAME, "graphiql-tab-add").click()
    wait(driver, "a second tab", lambda d: len(d.find_elements(By.CLASS_NAME, "graphiql-tab")) == 2)
    run(driver, "{ plans { type } }")
    wait(
        driver,
        "both tabs saved",
        lambda d: "plans" in (stored(d).get("local:graphiql:tabState") or ""),
    )

    open_graphiql(driver, service)

    wait(
        driver, "both tabs back", lambda d: len(d.find_elements(By.CLASS_NAME, "graphiql-tab")) == 2
    )
    assert editor_text(driver, QUERY) == "{ plans { type } }"
    assert ada.token not in json.dumps(stored(driver))


def test_graphiql_takes_a_token_an_earlier_version_stored_out_of_its_history(
    service: RunningService, browsers: Browsers
) -> None:
    driver = graphiql_window(service, browsers)
    driver.execute_script(
        "localStorage.setItem('graphiql:queries', JSON.stringify({queries: [{query: '{ now }',"
        ' headers: \'{"Authorization": "Bearer left-behind-token"}\'}]}))'
    )
    open_graphiql(driver, service)
    everything = json.dumps(stored(driver))
    assert "left-behind-token" not in everything
    assert "{ now }" in everything, "the history itself stays"


@pytest.mark.parametrize(
    "authorization", ["Bearer not-a-token", None], ids=["bad-token", "no-token"]
)
def test_a_subscription_with_a_refused_token_shows_its_error_at_once(
    service: RunningService, browsers: Browsers, authorization: str | None
) -> None:
    driver = graphiql_window(service, browsers)
    headers = {"Authorization": authorization} if authorization else {}
    set_editor(driver, HEADERS, json.dumps(headers))
    run(driver, "subscription { balanceChanged { balance } }")
    # graphql-ws's default retries of a 4403 would show nothing for about 40 s.
    WebDriverWait(driver, 8).until(
        lambda d: result(d).strip() != "",
        message="waited 8 s for the refusal of the subscription",
    )
    answer = result(driver)
    assert "error" in answer.lower(), answer
    assert '"balance"' not in answer
