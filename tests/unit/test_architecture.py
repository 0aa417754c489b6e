"""ARCHITECTURE.md's table of where each SPEC rule lives names one home per rule, and only files
that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "inmail"
PATH = re.compile(r"`([\w/]+(?:\.py|/))`")


def rule_rows() -> list[list[str]]:
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = text.split("## Where each rule lives", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows[1:]]


def exists(path: str) -> bool:
    return any((base / path).exists() for base in (PACKAGE, ROOT))


def test_each_rule_has_one_home_that_exists() -> None:
    rows = rule_rows()
    assert len(rows) >= 20
    for rule, home, _ in rows:
        homes = PATH.findall(home)
        assert len(homes) == 1, f"{rule}: {home}"
        assert exists(homes[0]), f"{rule}: {homes[0]} is not a file of the project"


def test_every_file_the_table_names_exists() -> None:
    named = {path for row in rule_rows() for cell in row[1:] for path in PATH.findall(cell)}
    assert "services/charges.py" in named
    assert [path for path in sorted(named) if not exists(path)] == []
