"""Large answers held against their caller while the client reads them: how large is held, how
many of the largest a caller may have unread, what a caller past it is told, and the body handed
to the connection a piece at a time."""

from __future__ import annotations

import asyncio
from typing import Final

from starlette.types import Message as AsgiMessage
from starlette.types import Send

# An answer this large is held in the process while its client reads it: counted against its
# holder's budget of answers in flight (ANSWERS_IN_FLIGHT answers of the largest size), and
# handed to the connection a piece at a time, each once the client has taken the one before.
# A smaller one goes to the connection whole: its buffer holds this much before it waits. A
# holder with less than one largest answer left of the budget is refused before a request runs.
HELD_ANSWER_BYTES: Final = 64 * 1024
ANSWERS_IN_FLIGHT: Final = 2


def withheld_answer(size: int) -> dict[str, object]:
    return {
        "message": f"The mutation was applied, but its answer ({size} bytes) is not sent while "
        "your earlier answers are still unread: read them (or close their connections), then "
        "read what it changed.",
        "extensions": {"code": "RESPONSE_TOO_LARGE", "applied": True},
    }


ANSWERS_UNREAD: Final = {
    "message": "Your earlier answers are still being sent: read them (or close their "
    "connections), then ask again.",
    "extensions": {"code": "SERVICE_UNAVAILABLE"},
}


def in_pieces(send: Send) -> Send:
    """`send`, with a body over HELD_ANSWER_BYTES handed over a piece at a time: each after the
    connection has let its client take the ones before (the server waits while the connection's
    buffer is full), so the answer's end is sent only once the client has read nearly all of it,
    and none of it is copied into the connection's buffer at once."""

    async def paced(message: AsgiMessage) -> None:
        body = message.get("body", b"")
        if message["type"] != "http.response.body" or len(body) <= HELD_ANSWER_BYTES:
            await send(message)
            return
        more = message.get("more_body", False)
        for start in range(0, len(body), HELD_ANSWER_BYTES):
            piece = body[start : start + HELD_ANSWER_BYTES]
            last = start + HELD_ANSWER_BYTES >= len(body)
            await send({"type": "http.response.body", "body": piece, "more_body": more or not last})
            if not last:
                await asyncio.sleep(0)  # the connection writes the piece: its buffer may fill

    return paced
