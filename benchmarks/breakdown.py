"""Where a request's CPU goes: `make bench`'s documents sent straight to the app, no HTTP.

    .venv/bin/python -m benchmarks.breakdown           # 3 rounds; 3,000 reads, 1,000 sends each
    .venv/bin/python -m benchmarks.breakdown --quick   # small counts

The app is the one `inmail serve` runs (`inmail.app.worker_app`, its lifespan run), with the
settings `make bench` gives its server, on a throwaway mongod of its own seeded as `make bench`
seeds. Requests are ASGI calls from this process, 16 at a time, prepared before the clock starts:
no uvicorn, no socket, no client. The figure is this process's CPU time per request: Starlette,
Strawberry, graphql-core, the service and PyMongo (mongod's own CPU is not in it).

The first row is one PyMongo `find_one`, the driver's own cost of a round trip here. The rows
then climb from `{ now }` (the GraphQL layer and nothing else) to the compose window `make bench`
measures, one step at a time, and end with sendInMail beside `send_inmail()` called in process
on the same kind of sends: the difference is what the GraphQL layer adds to a send.
Rounds take the rows in turn, in reverse order every other round; each row prints the median of
its rounds and every round. Every answer is checked after the clock stops.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvloop
from starlette.applications import Starlette
from starlette.types import Message

from benchmarks import workloads as w
from benchmarks.load import Call, graphql_call
from benchmarks.runner import (
    DB_NAME,
    _in_turn,
    _load,
    _machine,
    _own_mongod,
    _seeding_deps,
    _server_env,
)
from inmail.app import worker_app
from inmail.repositories.mongo import Mongo
from inmail.services.base import Deps
from inmail.settings import Settings

CONCURRENCY = 16
VIEWER_ID = "query ViewerId { viewer { id } }"
COMPOSE_ALONE = (
    "query ComposeAlone($r: ID!) { compose(recipientId: $r) "
    "{ canSend reason creditsLeft recipientIsConnection } }"
)

Answer = tuple[int, bytes]


async def asgi_call(app: Starlette, call: Call) -> Answer:
    """POST /graphql with `call`'s body and bearer token, straight to the app: (status, body)."""
    headers = [
        (b"content-type", b"application/json"),
        (b"accept", b"application/json"),
        (b"content-length", str(len(call.body)).encode()),
    ]
    if call.token is not None:
        headers.append((b"authorization", b"Bearer " + call.token.encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    status, body = 0, bytearray()

    async def receive() -> Message:
        return {"type": "http.request", "body": call.body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await app(scope, receive, send)
    return status, bytes(body)


def answered(check: Callable[[dict[str, Any]], None]) -> Callable[[Answer], None]:
    """A check of an ASGI answer: 200, no GraphQL errors, and `check` on its data."""

    def checked(answer: Answer) -> None:
        status, body = answer
        reply = json.loads(body)
        if status != 200 or reply.get("errors"):
            raise w.WorkloadError(f"status {status}: {body[:500]!r}")
        check(reply["data"])

    return checked


def no_check(_: object) -> None:
    return None


def found(doc: object) -> None:
    if doc is None:
        raise w.WorkloadError("find_one found no member")


@dataclass
class Row:
    """One document (or in-process call) and the CPU each of its rounds took per request."""

    name: str
    calls: Callable[[int], list[Callable[[], Awaitable[Any]]]]  # a round's calls, given its size
    size: int
    check: Callable[[Any], None]
    per_round: list[float] = field(default_factory=list)  # CPU ms per request

    @property
    def median(self) -> float:
        return statistics.median(self.per_round)


async def measure(row: Row) -> None:
    """One round of `row`: its calls, CONCURRENCY at a time; this process's CPU per call."""
    pending = iter(row.calls(row.size))
    results: list[Any] = []

    async def worker() -> None:
        for call in pending:
            results.append(await call())

    cpu = time.process_time()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    cpu = time.process_time() - cpu
    for result in results:
        row.check(result)
    row.per_round.append(1000 * cpu / len(results))


def rows_for(
    app: Starlette, world: w.World, deps: Deps, mongo: Mongo, reads: int, sends: int
) -> list[Row]:
    offset = 0

    def asgi(make: Callable[[int, int], list[Call]]) -> Callable[[int], list[Any]]:
        def calls(count: int) -> list[Callable[[], Awaitable[Answer]]]:
            nonlocal offset
            made = make(count, offset)
            offset += count
            return [functools.partial(asgi_call, app, call) for call in made]

        return calls

    def by_viewer(query: str) -> Callable[[int, int], list[Call]]:
        def make(count: int, start: int) -> list[Call]:
            senders = world.senders
            return [
                graphql_call(query, None, world.token(senders[i % len(senders)]))
                for i in range(start, start + count)
            ]

        return make

    def compose_alone(count: int, start: int) -> list[Call]:
        return [
            graphql_call(COMPOSE_ALONE, json.loads(call.body)["variables"], call.token)
            for call in w.compose_calls(world, count, start)
        ]

    def sends_over_asgi(count: int) -> list[Callable[[], Awaitable[Answer]]]:
        plan = world.take_sends(count)
        return [functools.partial(asgi_call, app, call) for call in w.send_calls(world, plan)]

    def sends_in_process(count: int) -> list[Callable[[], Awaitable[object]]]:
        return w.service_send_calls(deps, world.take_sends(count))

    def driver_alone(count: int) -> list[Callable[[], Awaitable[object]]]:
        members, senders = mongo.c.members, world.senders
        return [
            functools.partial(members.find_one, {"_id": senders[i % len(senders)]})
            for i in range(count)
        ]

    return [
        Row("PyMongo find_one by _id (the driver alone)", driver_alone, reads, found),
        Row("{ now }", asgi(lambda n, s: w.now_calls(world, n, s)), reads, answered(w.check_now)),
        Row("{ viewer { id } }", asgi(by_viewer(VIEWER_ID)), reads, answered(no_check)),
        Row(
            "{ viewer { inmailBalance } }",
            asgi(lambda n, s: w.balance_calls(world, n, s)),
            reads,
            answered(w.check_balance),
        ),
        Row("compose(recipientId) alone", asgi(compose_alone), reads, answered(no_check)),
        Row(
            "compose window (compose + viewer { inmailBalance })",
            asgi(lambda n, s: w.compose_calls(world, n, s)),
            reads,
            answered(w.check_compose),
        ),
        Row("sendInMail (ASGI, no HTTP)", sends_over_asgi, sends, answered(w.check_send)),
        Row("send_inmail() in process", sends_in_process, sends, no_check),
    ]


async def run(reads: int, sends: int, rounds: int) -> list[Row]:
    with _own_mongod("inmail-breakdown-") as (tmp, mongod):
        mongo = Mongo.connect(mongod.uri, DB_NAME, app_name="inmail-breakdown")
        try:
            deps = await _seeding_deps(mongo)
            sends_in_all = 2 * sends * (rounds + 1)
            senders = 200
            world = await w.seed(
                deps,
                recipients=max(110, sends_in_all // senders + 1),
                senders=senders,
                credits_per_sender=sends_in_all // senders + 2,
            )
            print(f"breakdown: {_machine()}; load average {_load()}", flush=True)
            app = worker_app(Settings.from_env(_server_env(mongod.uri, tmp)))
            async with app.router.lifespan_context(app):
                rows = rows_for(app, world, deps, mongo, reads, sends)
                for row in rows:  # a warm-up round, not counted
                    await measure(Row(row.name, row.calls, min(row.size, 200), row.check))
                for r in range(rounds):
                    for row in _in_turn(rows, r):
                        await measure(row)
            return rows
        finally:
            await mongo.close()


def print_rows(rows: list[Row]) -> None:
    now = next(row.median for row in rows if row.name == "{ now }")
    print("| request | CPU ms per request (median) | per round | x { now } |")
    print("|---|---:|---|---:|")
    for row in rows:
        rounds = ", ".join(f"{ms:.3f}" for ms in row.per_round)
        print(f"| {row.name} | {row.median:.3f} | {rounds} | {row.median / now:.2f}x |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--reads", type=int, default=3000, help="read requests per round (3000)")
    parser.add_argument("--sends", type=int, default=1000, help="sends per round and side (1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    args = parser.parse_args(argv)
    reads, sends, rounds = (100, 50, 1) if args.quick else (args.reads, args.sends, args.rounds)
    started = time.perf_counter()
    rows = uvloop.run(run(reads, sends, rounds))  # the event loop `inmail serve` runs on
    print_rows(rows)
    print(f"rounds: {rounds}; {reads} reads and {sends} sends per row and round; ", end="")
    print(f"{CONCURRENCY} at a time; wall time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
