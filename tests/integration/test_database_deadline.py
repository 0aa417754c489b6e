"""A database that stops answering holds no request past INMAIL_DATABASE_TIMEOUT.

The mongod here is the test's own, stopped with SIGSTOP: a hung primary, whose sockets stay
open and silent (unlike a crash, no error arrives). Without a deadline a read waits for the
driver's monitor to give up on the server (some 50 s) and a transaction retries for two
minutes, then answers "Unexpected error.". With one, each answers SERVICE_UNAVAILABLE, and a
retry under the same idempotency key, once the database is back, is granted once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from inmail.embedded_mongod import EmbeddedMongod
from inmail.repositories.mongo import CLOSE_WITHIN, Mongo
from support import Api, Person, ada_and_grace, new_key, open_api
from support import test_settings as settings_for_tests

pytestmark = pytest.mark.slow

BALANCE = "{ viewer { inmailBalance } }"
SEND = (
    "mutation($i: SendInMailInput!) { sendInMail(input: $i) { creditsLeft "
    "conversation { id } errors { code } } }"
)
UNAVAILABLE = "SERVICE_UNAVAILABLE"
GRAPHQL_RESPONSE = "application/graphql-response+json"


@pytest.fixture
def mongod(tmp_path: Path) -> Iterator[EmbeddedMongod]:
    server = EmbeddedMongod(tmp_path / "db", oplog_mb=64)
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(server.pid, signal.SIGCONT)  # type: ignore[arg-type]
        server.stop()


@contextlib.asynccontextmanager
async def hung(mongod: EmbeddedMongod) -> AsyncIterator[None]:
    assert mongod.pid is not None
    os.kill(mongod.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(mongod.pid, signal.SIGCONT)


def send_input(recipient: Person, key: str) -> dict[str, Any]:
    return {
        "i": {"recipientId": recipient.id, "subject": "Hi", "body": "Hello", "idempotencyKey": key}
    }


async def post(api: Api, query: str, token: str, variables: dict[str, Any] | None = None) -> Any:
    return await api.client.post(
        "/graphql",
        json={"query": query, "variables": variables or {}},
        headers={"Authorization": f"Bearer {token}", "Accept": GRAPHQL_RESPONSE},
    )


async def test_a_hung_database_answers_unavailable_and_a_retry_is_granted_once(
    mongod: EmbeddedMongod,
) -> None:
    settings = settings_for_tests(database_timeout=2.0)
    async with open_api(mongod.uri, "inmail_deadline", settings) as api:
        ada, grace = await ada_and_grace(api)
        key = new_key()
        assert (await post(api, BALANCE, ada.token)).status_code == 200  # Ada is known here
        async with (
            open_api(mongod.uri, "inmail_deadline", settings) as elsewhere,
            hung(mongod),
        ):
            read = await post(api, BALANCE, ada.token)
            sent = await post(api, SEND, ada.token, send_input(grace, key))
            # A process that has not seen Ada yet checks that she exists before the mutation
            # runs: that read fails before any field ran.
            unchecked = await post(elsewhere, SEND, ada.token, send_input(grace, new_key()))
        for response in (read, sent, unchecked):
            body = response.json()
            assert [error["extensions"]["code"] for error in body["errors"]] == [UNAVAILABLE]
            # A write without a key (sendMessage) is not promised to act once: read first.
            assert "may or may not have taken effect" in body["errors"][0]["message"]
            assert "timed out" not in response.text  # nothing of the driver's detail
            assert "127.0.0.1" not in response.text
        # A field that failed keeps the 200 of a response with data; where no field ran, 503.
        assert (read.status_code, sent.status_code, unchecked.status_code) == (200, 200, 503)

        # The database is back: the client retries under its key until it is answered. An
        # attempt left open by the hang may hold the member's locks until the server aborts it.
        refusals: list[str] = []
        for _ in range(30):
            body = await api.raw(SEND, send_input(grace, key), ada.token)
            if not body.get("errors"):
                break
            refusals.extend(error["extensions"]["code"] for error in body["errors"])
        assert set(refusals) <= {UNAVAILABLE}
        answer = body["data"]["sendInMail"]
        assert answer["errors"] == []
        again = await api.payload("sendInMail", SEND, send_input(grace, key), ada.token)
        assert again["conversation"]["id"] == answer["conversation"]["id"]
        assert await api.balance(ada) == 4  # five credits, one InMail: charged once


async def test_advance_clock_alone_is_not_held_to_the_deadline(
    mongodb_uri: str, db_name: str
) -> None:
    """It runs every job of up to a year of a manual clock: with a deadline of a microsecond
    every other operation that reads fails, and it still completes."""
    async with open_api(mongodb_uri, db_name) as setup:
        ada, _ = await ada_and_grace(setup)
    settings = settings_for_tests(database_timeout=1e-6)  # over before any answer
    async with open_api(mongodb_uri, db_name, settings) as api:
        read = await post(api, BALANCE, ada.token)
        moved = await api.gql(
            "mutation { advanceClock(input: {days: 31}) { now errors { code } } }",
            token=api.admin,
        )
    assert [e["extensions"]["code"] for e in read.json()["errors"]] == [UNAVAILABLE]
    assert moved["advanceClock"]["errors"] == []


async def test_a_process_closes_its_client_soon_when_its_database_hangs(
    mongod: EmbeddedMongod,
) -> None:
    """Stopping a process closes its client, which ends its sessions on the server: with the
    database hung, that took 30 s here. It is bounded by `CLOSE_WITHIN` (5 s)."""
    mongo = Mongo.connect(mongod.uri, "inmail_close")
    await mongo.db.command("ping")  # a session used, to be ended at close
    async with hung(mongod):
        await asyncio.wait_for(mongo.close(), timeout=CLOSE_WITHIN + 15)
