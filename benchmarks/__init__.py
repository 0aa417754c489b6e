"""The benchmarks: a development tool, not part of the service (the image never holds them).

`make bench` (`python -m benchmarks`) measures the service end to end against its floors, on its
own mongod and server.

Workloads, each side by side with its floor (`benchmarks.floors`) in ABBA rounds: sendInMail over
HTTP from many senders, the same service code called in-process, and the send floor (the same
guarantees in one PyMongo transaction); the compose window against `{ now }` and against the
compose floor (one aggregate), and `viewer { inmailBalance }`; the member page for 10 and 100
conversations against graphql-core executing the same document over its data in memory; a
scheduler pass (`benchmarks.renewals`) against the same writes as bare bulk writes.
See BENCHMARKS.md for what the figures mean and the latest ones.
"""

from __future__ import annotations

import argparse
import sys

WORKLOADS = ("send", "compose", "page", "scheduler")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="small counts: a smoke run (seconds, not minutes)"
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds per comparison (3)")
    parser.add_argument("--sends", type=int, help="sendInMail ops per round and side (1000)")
    parser.add_argument("--reads", type=int, help="compose and { now } requests per round (2000)")
    parser.add_argument("--page-requests", type=int, help="member pages per size (40)")
    parser.add_argument("--senders", type=int, help="members sending InMail (200)")
    parser.add_argument("--concurrency", type=int, help="concurrent clients (16)")
    parser.add_argument(
        "--scheduler-sizes",
        type=int,
        nargs="+",
        metavar="N",
        help="members renewed per scheduler pass (10000 100000)",
    )
    parser.add_argument(
        "--workloads",
        nargs="+",
        choices=WORKLOADS,
        default=list(WORKLOADS),
        help="which workloads to run (all)",
    )
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="load generator: a minimal HTTP/1.1 client (raw) or httpx.AsyncClient",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="afterwards, sample the server with py-spy (if installed) during an extra, "
        "unmeasured phase of --profile-workload; writes collapsed stacks, prints a summary",
    )
    parser.add_argument(
        "--profile-workload",
        choices=("send", "compose", "now", "page"),
        default="send",
        help="what to profile (send)",
    )


def run(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    from benchmarks.runner import SizeError, Sizes, print_results
    from benchmarks.runner import run as run_bench

    try:
        sizes = Sizes.from_args(args)
    except SizeError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2

    if args.profile is not None:
        args.profile = Path(args.profile).resolve()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        results = asyncio.run(run_bench(args, sizes))
    else:
        # The server runs on uvloop (uvicorn picks it): so does the in-process floor.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            results = runner.run(run_bench(args, sizes))
    print_results(results, sizes)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
