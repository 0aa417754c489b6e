"""A bare GraphQL-over-websocket client for the live-update tests, on the `websockets` library.

It speaks graphql-transport-ws and the older graphql-ws from their message formats alone, so
what the tests see is what any standard client sees, not what our own code thinks it sent.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
PROTOCOLS = (TRANSPORT_WS, LEGACY_WS)

BALANCE_CHANGED = (
    "subscription($m: ID) { balanceChanged(memberId: $m) { memberId balance delta reason at } }"
)

WAIT = 20.0  # generous: a wait for an event, never a measure of speed


class OperationError(AssertionError):
    """The server answered an operation with an error message."""

    def __init__(self, payload: Any) -> None:
        super().__init__(payload)
        self.payload = payload


def graphql_ws_url(http_url: str) -> str:
    """The websocket GraphQL endpoint of the app served at `http_url`."""
    return http_url.replace("http://", "ws://") + "/graphql"


def init_payload(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


class GraphQLSocket:
    def __init__(self, ws: ClientConnection, protocol: str) -> None:
        self.ws = ws
        self.protocol = protocol
        self._ids = 0
        # Messages of other operations that arrived while one was awaited, kept in order.
        self._held: dict[str, collections.deque[dict[str, Any]]] = collections.defaultdict(
            collections.deque
        )

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        url: str,
        token: str | None,
        protocol: str = TRANSPORT_WS,
        *,
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
        payload: Mapping[str, object] | None = None,
    ) -> AsyncIterator[GraphQLSocket]:
        """A socket past connection_init with `token` (or with `payload` as it is);
        `headers` go on the handshake."""
        async with connect(
            url,
            subprotocols=[Subprotocol(protocol)],
            open_timeout=WAIT,
            additional_headers=headers,
        ) as ws:
            assert ws.subprotocol == protocol
            socket = cls(ws, protocol)
            init = init_payload(token) if payload is None else payload
            await socket._send({"type": "connection_init", "payload": init})
            ack = await socket.message()
            assert ack["type"] == "connection_ack", ack
            yield socket

    async def _send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def message(self, within: float = WAIT) -> dict[str, Any]:
        """The next protocol message, keep-alives answered and skipped."""
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), within)
            message: dict[str, Any] = json.loads(raw)
            if message["type"] == "ping":
                await self._send({"type": "pong"})
            elif message["type"] not in ("ka", "pong"):
                return message

    async def subscribe(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        operation_name: str | None = None,
    ) -> str:
        self._ids += 1
        operation_id = str(self._ids)
        kind = "subscribe" if self.protocol == TRANSPORT_WS else "start"
        payload: dict[str, Any] = {"query": query, "variables": variables or {}}
        if operation_name is not None:
            payload["operationName"] = operation_name
        await self._send({"id": operation_id, "type": kind, "payload": payload})
        return operation_id

    async def stop(self, operation_id: str) -> None:
        kind = "complete" if self.protocol == TRANSPORT_WS else "stop"
        await self._send({"id": operation_id, "type": kind})

    async def result(self, operation_id: str, within: float = WAIT) -> dict[str, Any]:
        """The next result of an operation: its `payload` ({"data": ...} or with "errors").

        Results of other operations that arrive meanwhile are kept for their own turn: on one
        socket, the server may answer its operations in any order."""
        while True:
            held = self._held[operation_id]
            message = held.popleft() if held else await self.message(within)
            if message.get("id") != operation_id:
                if message.get("id") is not None:
                    self._held[str(message["id"])].append(message)
                continue
            if message["type"] in ("next", "data"):
                payload: dict[str, Any] = message["payload"]
                return payload
            if message["type"] == "error":
                raise OperationError(message["payload"])
            raise AssertionError(f"operation {operation_id} ended: {message}")

    async def update(self, operation_id: str, within: float = WAIT) -> dict[str, Any]:
        """The next BalanceUpdate of a balanceChanged operation."""
        payload = await self.result(operation_id, within)
        assert not payload.get("errors"), payload
        update: dict[str, Any] = payload["data"]["balanceChanged"]
        return update


async def refusal_close_code(
    url: str, token: str | None, protocol: str, headers: list[tuple[str, str]] | None = None
) -> int | None:
    """The close code the server ends a connection with after its connection_init; `headers`
    go on the handshake."""
    async with connect(
        url, subprotocols=[Subprotocol(protocol)], open_timeout=WAIT, additional_headers=headers
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": init_payload(token)}))
        with contextlib.suppress(ConnectionClosed):
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
                assert message["type"] != "connection_ack", "the server accepted the connection"
        return ws.close_code
