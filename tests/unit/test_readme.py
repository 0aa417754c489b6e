"""The README stays true: its settings table is the one the code reads."""

from __future__ import annotations

import re
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token

from inmail.settings import SETTINGS, settings_table_markdown, table_cell

README = Path(__file__).resolve().parents[2] / "README.md"

# CommonMark with GitHub's table extension: the README's tables as GitHub draws them.
MARKDOWN = MarkdownIt("commonmark").enable("table")


def _plain(inline: Token) -> str:
    """What a reader sees of an inline run: its text and code spans, without the markup."""
    return "".join(
        child.content
        for child in inline.children or []
        if child.type in ("text", "code_inline", "softbreak")
    ).strip()


def _rendered_tables(markdown: str) -> list[list[list[str]]]:
    """Each table of `markdown` as GitHub renders it: rows (the header first) of cell texts."""
    tables: list[list[list[str]]] = []
    row: list[str] = []
    for token in MARKDOWN.parse(markdown):
        if token.type == "table_open":
            tables.append([])
        elif token.type == "tr_open":
            row = []
        elif token.type == "inline" and tables and token.level > 0:
            row.append(_plain(token))
        elif token.type == "tr_close":
            tables[-1].append(row)
    return tables


def _source_cells(line: str) -> list[str]:
    """A table row's cells as GFM splits them: at every `|` that no backslash escapes."""
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def _readme_settings_table() -> str:
    text = README.read_text()
    start = text.index("<!-- settings-table")
    start = text.index("\n", start) + 1
    return text[start : text.index("<!-- /settings-table -->")]


def test_the_readme_settings_table_is_the_one_the_service_reads() -> None:
    assert _readme_settings_table().strip() == settings_table_markdown()


def test_every_row_of_the_readme_settings_table_has_as_many_cells_as_its_header() -> None:
    header, _rule, *rows = _readme_settings_table().strip().splitlines()
    widths = {line: len(_source_cells(line)) for line in rows}
    broken = [line for line, width in widths.items() if width != len(_source_cells(header))]
    assert not broken, "rows whose cells do not line up with the header:\n" + "\n".join(broken)


def test_the_readme_settings_table_renders_each_setting_in_its_own_row() -> None:
    (table,) = _rendered_tables(_readme_settings_table())
    header, *rows = table
    assert header == ["variable", "default", "accepts", "what it does"]
    assert [row[0] for row in rows] == [s.name for s in SETTINGS]
    for spec, row in zip(SETTINGS, rows, strict=True):
        # What GitHub shows in each cell is the setting's own text, nothing cut or spilled.
        accepts, help_ = (
            _plain(MARKDOWN.parseInline(text)[0]) for text in (spec.accepts, spec.help)
        )
        default = spec.default if spec.default is not None else "unset"
        assert row == [spec.name, default, accepts, help_], spec.name


def test_a_table_cell_keeps_pipes_and_line_breaks_inside_its_cell() -> None:
    awkward = "`true|false` or yes | no,\nover two lines"
    line = f"| `INMAIL_AWKWARD` | {table_cell(awkward)} |"
    ((header, row),) = _rendered_tables(f"| variable | accepts |\n|---|---|\n{line}\n")
    assert header == ["variable", "accepts"]
    assert row == ["INMAIL_AWKWARD", "true|false or yes | no, over two lines"]


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
