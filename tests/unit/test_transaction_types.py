"""A repository that writes cannot be built outside a transaction: the type checker refuses it.

Every repository a `Transaction` hands out takes a `TransactionSession`, which only `Mongo`'s
transactions make; the read-only repositories of `Reads` take `NO_TRANSACTION`. The test has
mypy check a module that builds each of both kinds outside a transaction, and expects an error
on each line that builds a writer and on no other line.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path

from mypy import api

from inmail.repositories.unit_of_work import Reads, Transaction

ERROR_LINE = re.compile(r"^[^:]+:(\d+): error: (.*)$", re.M)


def _built_outside_a_transaction(kinds: dict[str, type]) -> list[str]:
    return [
        f"    {field} = {kind.__name__}(mongo, NO_TRANSACTION)  # {kind.__module__}"
        for field, kind in kinds.items()
    ]


def _repository_kinds(holder: type) -> dict[str, type]:
    hints = typing.get_type_hints(holder)
    return {
        field: kind
        for field, kind in hints.items()
        if isinstance(kind, type) and field != "careful"
    }


def test_only_a_transaction_builds_a_repository_that_writes(tmp_path: Path) -> None:
    writers = _repository_kinds(Transaction)
    readers = _repository_kinds(Reads)
    assert len(writers) >= 10
    assert len(readers) >= 10
    kinds = {
        **{f"w_{k}": v for k, v in writers.items()},
        **{f"r_{k}": v for k, v in readers.items()},
    }
    imports = sorted({f"from {kind.__module__} import {kind.__name__}" for kind in kinds.values()})
    header = [*imports, "from inmail.repositories.mongo import NO_TRANSACTION, Mongo", "", ""]
    body = ["def build(mongo: Mongo) -> None:", *_built_outside_a_transaction(kinds)]
    module = tmp_path / "outside.py"
    module.write_text("\n".join([*header, *body]) + "\n", encoding="utf-8")

    report, trouble, status = api.run(
        [
            "--strict",
            "--no-incremental",
            "--follow-imports=silent",
            "--cache-dir=/dev/null",
            str(module),
        ]
    )

    assert status == 1, trouble or report  # errors found, and mypy ran to the end
    first_line = len(header) + 2
    refused = {
        int(n) - first_line
        for n, message in ERROR_LINE.findall(report)
        if "TransactionSession" in message
    }
    other = [m for m in ERROR_LINE.findall(report) if "TransactionSession" not in m[1]]
    names = list(kinds)
    assert other == [], report
    assert sorted(names[i] for i in refused) == sorted(f"w_{k}" for k in writers), report
