"""A line a flood repeats is logged at once, then once every few seconds with a count."""

from __future__ import annotations

import logging

import pytest

from inmail.logs import Occasional


def test_a_flood_is_one_line_at_once_then_one_a_period_saying_how_many(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    line = Occasional(
        logging.getLogger("inmail.test"), logging.WARNING, "refused: %d open", 10.0, lambda: now[0]
    )
    caplog.set_level(logging.WARNING, "inmail.test")

    line.happened(1000)  # the first: at once
    for _ in range(499):
        now[0] += 0.01
        line.happened(1000)
    now[0] = 110.0  # ten seconds after the first line
    line.happened(999)
    now[0] = 115.0
    line.happened(998)

    assert [r.getMessage() for r in caplog.records] == [
        "refused: 1000 open (1 since the last such line)",
        "refused: 999 open (500 since the last such line)",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)
