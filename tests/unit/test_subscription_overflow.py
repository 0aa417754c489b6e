"""A subscription that fell behind ends with an error that says so, in its own code."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from graphql import GraphQLError

from inmail.resolvers.context import Context
from inmail.resolvers.subscription import _inbox_items


class FellBehind:
    """A subscriber that hands out its items, then says it was closed for falling behind."""

    overflowed = True

    def __init__(self, items: list[str]) -> None:
        self._items = items

    def __aiter__(self) -> AsyncIterator[str]:
        return self._given()

    async def _given(self) -> AsyncIterator[str]:
        for item in self._items:
            yield item


class Reads:
    def __init__(self) -> None:
        self.fresh_for_events: list[object] = []

    def fresh_for(self, event: object) -> None:
        self.fresh_for_events.append(event)


class FakeContext:
    def __init__(self) -> None:
        self.reads = Reads()


async def test_a_subscriber_closed_for_falling_behind_ends_with_a_fell_behind_error() -> None:
    context = FakeContext()

    @contextlib.asynccontextmanager
    async def subscribe() -> AsyncIterator[Any]:
        yield FellBehind(["a", "b"])

    shown: list[str] = []

    async def read_all() -> None:
        async for item in _inbox_items(cast(Context, context), subscribe, str.upper):
            shown.append(item)

    with pytest.raises(GraphQLError) as ended:
        await read_all()

    assert shown == ["A", "B"]
    assert context.reads.fresh_for_events == ["a", "b"]
    assert ended.value.extensions == {"code": "FELL_BEHIND"}
    assert "read the list and subscribe again" in ended.value.message
