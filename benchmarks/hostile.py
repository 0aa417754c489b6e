"""What hostile text costs the functions that read it before any bound applies, by size.

Each row is one shape of input a stranger can send (the shapes an audit found slow before they
were bounded), timed in process at three sizes, best of three. Linear work grows 4x from the
middle size to the largest; quadratic work would grow 16x. Run it with
`python -m benchmarks.hostile` (`--quick` for small sizes); nothing here starts a server.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from inmail.disclosure import without_suggestions
from inmail.endpoint.json_text import MAX_JSON_DEPTH, nested_deeper_than
from inmail.endpoint.media_types import response_media_type
from inmail.resolvers.limits import line_count
from inmail.resolvers.variables_guard import variables_refusal

SIZES = (64 * 1024, 256 * 1024, 1024 * 1024)
QUICK_SIZES = (1024, 4096, 16384)


def _repeat(unit: str, size: int, head: str = "") -> str:
    return head + unit * max(1, (size - len(head)) // len(unit))


# (what, build an input of about `size` characters, read it as the service reads it)
SHAPES: tuple[tuple[str, Callable[[int], object], Callable[[object], object]], ...] = (
    (
        "JSON nesting: brackets only",
        lambda size: "[" * (size // 2) + "]" * (size // 2),
        lambda text: nested_deeper_than(str(text), MAX_JSON_DEPTH),
    ),
    (
        "JSON nesting: a string that never closes, ending in a backslash",
        lambda size: _repeat('"\\', size, "[" * (MAX_JSON_DEPTH + 1)),
        lambda text: nested_deeper_than(str(text), MAX_JSON_DEPTH),
    ),
    (
        "JSON nesting: 64 deep, then closed, over and over",
        lambda size: _repeat("[{" * 32 + "]}" * 32, size),
        lambda text: nested_deeper_than(str(text), MAX_JSON_DEPTH),
    ),
    (
        "error message echoing ' Did you mean ' with no '?'",
        lambda size: _repeat(" Did you mean ", size, 'Int cannot represent: "'),
        lambda text: without_suggestions(str(text)),
    ),
    (
        "Accept header of commas",
        lambda size: "," * size,
        lambda text: response_media_type(str(text)),
    ),
    (
        "Accept header of parameters",
        lambda size: _repeat(";a=b", size, "application/json"),
        lambda text: response_media_type(str(text)),
    ),
    (
        "document of line breaks",
        lambda size: "\r\n" * (size // 2) + "{ now }",
        lambda text: line_count(str(text)),
    ),
    (
        "variables: one long list of ids",
        lambda size: {"i": list(range(size // 8))},
        variables_refusal,
    ),
)


def best_of_three(read: Callable[[object], object], value: object) -> float:
    times = []
    for _ in range(3):
        started = time.perf_counter()
        read(value)
        times.append(time.perf_counter() - started)
    return min(times)


def table(sizes: tuple[int, int, int]) -> list[str]:
    labels = [f"{size // 1024} KiB" if size >= 1024 else f"{size} B" for size in sizes]
    lines = [
        f"| input | {' | '.join(f'{label} ms' for label in labels)} | {labels[2]} / {labels[1]} |",
        "|---|" + "---:|" * (len(sizes) + 1),
    ]
    for what, build, read in SHAPES:
        seconds = [best_of_three(read, build(size)) for size in sizes]
        growth = seconds[2] / seconds[1] if seconds[1] > 0 else float("nan")
        cells = " | ".join(f"{s * 1000:.2f}" for s in seconds)
        lines.append(f"| {what} | {cells} | {growth:.1f}x |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    sizes = QUICK_SIZES if args.quick else SIZES
    print("\n".join(table(sizes)))


if __name__ == "__main__":
    main()
