"""A summary of a py-spy profile in its raw (collapsed stacks) format: where the time went.

.venv/bin/python -m benchmarks.profile FILE [TOP]
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
_PACKAGES = (
    "inmail",
    "pymongo",
    "bson",
    "strawberry",
    "graphql",
    "starlette",
    "uvicorn",
    "jwt",
    "asyncio",
    "json",
    "prometheus_client",
)
_OURS = ("inmail/", "strawberry/", "pymongo/", "graphql/", "starlette/")


def _function(frame: str) -> str:
    """`name (path/file.py:123)` -> `name (path/file.py)`: one entry per function, not per line."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    return f"{match['func']} ({match['file']})"


def _package(function: str) -> str:
    """The package a frame's code belongs to, by its file path."""
    location = function.rpartition("(")[2]
    first = location.split("/", 1)[0]
    return first if first in _PACKAGES else "other (stdlib, C)"


@dataclass
class Profile:
    samples: int
    own: list[tuple[str, int]]
    inclusive: list[tuple[str, int]]
    packages: list[tuple[str, int]]


def summarize(path: Path, top: int = 15) -> Profile:
    """Functions by own samples, by samples in them or below, and packages by own samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        packages[_package(frames[-1])] += count
        for name in set(frames):
            inclusive[name] += count
    return Profile(
        total, own.most_common(top), inclusive.most_common(top * 4), packages.most_common()
    )


def render(path: Path, top: int = 15) -> str:
    profile = summarize(path, top)
    total = profile.samples
    if not total:
        return f"{path}: no samples"
    lines = [f"py-spy: {total} samples of the server ({path})", "", "own time by package:"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in profile.packages]
    lines += ["", "own time (self):"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in profile.own]
    lines += ["", "inclusive time (the function and what it calls), inmail/strawberry/pymongo:"]
    shown = [(name, n) for name, n in profile.inclusive if any(k in name for k in _OURS)]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in shown[: top * 2]]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(render(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 15))
