"""The README stays true: its settings table is the one the code reads."""

from __future__ import annotations

from pathlib import Path

from inmail.settings import settings_table_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_settings_table_is_the_one_the_service_reads() -> None:
    text = README.read_text()
    start = text.index("<!-- settings-table")
    start = text.index("\n", start) + 1
    end = text.index("<!-- /settings-table -->")
    assert text[start:end].strip() == settings_table_markdown()


def test_the_readme_opens_with_the_two_commands() -> None:
    lines = [line for line in README.read_text().splitlines() if line.startswith("make ")]
    assert lines[:2] == [
        "make serve   # installs into .venv and runs the service: GraphiQL at "
        "http://127.0.0.1:8000/graphql",
        "make test    # installs the test tools into .venv and runs the whole suite on a real "
        "mongod",
    ]


def test_the_readme_index_table_lists_every_index_the_service_creates() -> None:
    from inmail.repositories.mongo import INDEXES

    rows = {
        (cells[1].strip(), cells[2].strip().strip("`"))
        for line in README.read_text().splitlines()
        if line.startswith("| ") and len(cells := line.split("|")) > 3
    }
    created = {
        (collection, model.document["name"])
        for collection, models in INDEXES.items()
        for model in models
    }
    assert created <= rows, f"missing from README: {sorted(created - rows)}"
