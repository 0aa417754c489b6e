"""The README's sharding plan works as written: every unique index of a sharded collection
starts with that collection's shard key (MongoDB refuses to create one that does not)."""

from __future__ import annotations

import re
from pathlib import Path

from inmail.repositories.mongo import INDEXES

README = Path(__file__).resolve().parents[2] / "README.md"


def _shard_keys() -> dict[str, str | None]:
    """collection -> the first field of its documented shard key (None: unsharded)."""
    section = README.read_text().split("### Sharding", 1)[1].split("\n### ", 1)[0]
    keys: dict[str, str | None] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("collection", "---"):
            continue
        found = re.search(r"`\{ *(\w+) *:", cells[1])
        for name in cells[0].split(","):
            keys[name.strip()] = found.group(1) if found else None
    return keys


def test_the_sharding_table_names_every_collection_of_the_service() -> None:
    assert set(_shard_keys()) == set(INDEXES)


def test_every_unique_index_of_a_sharded_collection_starts_with_its_shard_key() -> None:
    keys = _shard_keys()
    checked = 0
    for collection, shard_key in keys.items():
        if shard_key is None:
            continue
        for model in INDEXES[collection]:
            document = model.document
            if not document.get("unique"):
                continue
            first_field = next(iter(document["key"]))
            assert first_field == shard_key, (
                f"{collection}.{document['name']} starts with {first_field}, "
                f"not the shard key {shard_key}"
            )
            checked += 1
    assert checked >= 6  # ledger (2), conversations (2), charges, idempotency


def test_the_direct_pair_index_leads_with_the_conversations_shard_key() -> None:
    by_name = {model.document["name"]: model.document for model in INDEXES["conversations"]}
    assert list(by_name["one_direct_per_sender_pair"]["key"]) == ["senderId", "pairKey"]
    assert "one_direct_per_pair" not in by_name
