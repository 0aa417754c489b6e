"""Browser tests: `inmail serve` on the test mongod, driven by Debian's headless Chromium.

Selenium talks to /usr/bin/chromedriver directly (never Selenium Manager, which would download a
driver); CI installs `chromium` and `chromium-driver` from Debian (.ci/run). A failing test
leaves screenshots and each page's console log under test-artifacts/browser/<test>/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.servers import INMAIL, ServiceProcess
from support import post_graphql, serving, session_service_env

# Selenium Manager stays offline: it must never look for, or fetch, a browser or a driver.
os.environ["SE_OFFLINE"] = "true"

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = os.environ.get("INMAIL_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("INMAIL_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
WAIT_SECONDS = 30
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--window-size=1280,1600",
]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


def _require_chromium() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        pytest.fail(
            f"the browser tests need Debian's Chromium and ChromeDriver; missing: {missing}. "
            "CI installs them (.ci/run); here: apt-get install chromium chromium-driver",
            pytrace=False,
        )


@dataclass
class Member:
    id: str
    name: str
    token: str


class RunningService:
    """`inmail serve` on a database of its own, with tokens minted by `inmail token`."""

    def __init__(self, process: ServiceProcess, env: dict[str, str]) -> None:
        self.process = process
        self.env = env
        self.url = process.url

    def token(self, *who: str) -> str:
        out = subprocess.run(
            [*INMAIL, "token", *who], env=self.env, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    def post(self, query: str, token: str) -> dict[str, Any]:
        body, _ = post_graphql(self.url, query, token)
        assert not body.get("errors"), body
        return body

    def create_member(self, name: str, plan: str = "PREMIUM_CAREER") -> Member:
        card = '{brand: "Visa", last4: "4242", expMonth: 12, expYear: 2039}'
        created = self.post(
            f"mutation {{ createMember(input: {{name: {json.dumps(name)}, plan: {plan}, "
            f"paymentMethod: {card}}}) {{ member {{ id }} errors {{ code }} }} }}",
            self.token("--admin"),
        )["data"]["createMember"]
        assert created["errors"] == [], created
        member_id = created["member"]["id"]
        return Member(member_id, name, self.token("--member", member_id))

    def connect(self, a: Member, b: Member) -> None:
        """Make the two 1st-degree connections, as an admin does."""
        connected = self.post(
            f'mutation {{ connectMembers(input: {{memberId: "{a.id}", otherMemberId: "{b.id}"}})'
            " { ok errors { code } } }",
            self.token("--admin"),
        )["data"]["connectMembers"]
        assert connected == {"ok": True, "errors": []}, connected


@pytest.fixture
def service(mongodb_uri: str, tmp_path: Path) -> Iterator[RunningService]:
    env = session_service_env(mongodb_uri, tmp_path / "data", INMAIL_METRICS_PORT="off")
    process = ServiceProcess.serve(env, tmp_path / "serve.log", die_with_parent=True)
    with serving(process):
        yield RunningService(process, env)


class Browsers:
    """Headless Chromium windows, each with a fresh profile; closed (and, when the test failed,
    photographed with their console logs) at the end of the test."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.drivers: dict[str, WebDriver] = {}

    def open(self, name: str) -> WebDriver:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        profile = tempfile.mkdtemp(prefix=f"chromium-{name}-", dir=self.tmp_path)
        options.add_argument(f"--user-data-dir={profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        self.drivers[name] = driver
        return driver

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, driver in self.drivers.items():
            try:
                driver.save_screenshot(str(folder / f"{name}.png"))
                (folder / f"{name}.html").write_text(driver.page_source)
                console = browser_log(driver, "browser")
                (folder / f"{name}-console.json").write_text(json.dumps(console, indent=1))
            except Exception as exc:  # a crashed browser still leaves the others' pictures
                (folder / f"{name}-error.txt").write_text(repr(exc))

    def close(self) -> None:
        """Quit every window, each whatever became of the others; a failure to quit one stops
        its chromedriver by its pid all the same, and is raised once all are closed."""
        failures: list[Exception] = []
        for driver in self.drivers.values():
            try:
                driver.quit()
            except Exception as exc:
                failures.append(exc)
                process = driver.service.process
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait(30)
        if failures:
            raise failures[0]


@pytest.fixture
def browsers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Browsers]:
    _require_chromium()
    opened = Browsers(tmp_path)
    try:
        yield opened
    finally:
        if request.node.stash.get(_FAILED, False):
            folder = ARTIFACTS / request.node.name
            opened.save(folder)
            print(f"\nbrowser screenshots and console logs: {folder}")
        opened.close()


def browser_log(driver: WebDriver, kind: str) -> list[dict[str, Any]]:
    """Chromium's log of `kind` ("browser": the console; "performance": network events)."""
    entries: list[dict[str, Any]] = driver.get_log(kind)  # type: ignore[no-untyped-call]
    return entries


def wait(driver: WebDriver, what: str, until: Callable[[WebDriver], Any]) -> Any:
    """Wait up to WAIT_SECONDS for `until` to be truthy; the message says what was awaited. A
    check that touched an element the page has since replaced is tried again."""
    waiting = WebDriverWait(
        driver, WAIT_SECONDS, ignored_exceptions=(StaleElementReferenceException,)
    )
    return waiting.until(until, message=f"waited for {what}")
