"""ARCHITECTURE.md's table of where each SPEC rule lives names one home per rule, and only files
that exist; the domain imports nothing but the standard library and itself."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from support import imported_modules

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


def test_the_domain_imports_the_standard_library_and_itself_alone() -> None:
    """The import contracts name the packages the domain may not import; this names the only
    ones it may, so that a new dependency cannot slip in under a name no contract lists."""
    files = sorted((PACKAGE / "domain").glob("*.py"))
    assert len(files) >= 15
    foreign = {
        f"{path.name}: {name}"
        for path in files
        for name in imported_modules(path)
        if name.split(".")[0] not in sys.stdlib_module_names
        and name != "inmail.domain"
        and not name.startswith("inmail.domain.")
    }
    assert foreign == set()
