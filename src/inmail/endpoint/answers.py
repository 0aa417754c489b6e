"""Large answers held against their caller while the client reads them: how large is held, how
many of the largest a caller may have unread, what a caller past it is told, and the body handed
to the connection a piece at a time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from starlette.responses import Response
from starlette.types import Message as AsgiMessage
from starlette.types import Receive, Scope, Send

from inmail.endpoint import LOGGER
from inmail.endpoint.refusals import CodedRefusal
from inmail.logs import Occasional
from inmail.resolvers.cost import CostHolders

log = logging.getLogger(LOGGER)

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


class AnswerBudget:
    """Each caller's large answers not yet taken by their clients, in this process: at most
    ANSWERS_IN_FLIGHT answers of the largest size (INMAIL_MAX_RESPONSE_BYTES) per caller.

    A client that stops reading holds its answers in the process (until the body timeout cuts it
    off). Past the budget, a caller's next large answer is refused, 503, rather than held too,
    and so is their next request, before it runs."""

    def __init__(self, largest: int, encode: Callable[[object], str]) -> None:
        self.held = CostHolders(ANSWERS_IN_FLIGHT * largest)
        self._largest = largest
        self._encode = encode
        self._refused = Occasional(
            log, logging.INFO, "an answer refused: its holder has %d bytes of answers unread"
        )

    def refuse_before_running(self, holder: str | None) -> None:
        """Refuse a caller's request before it runs (503, CodedRefusal) when less than one
        largest answer is left of their budget; `holder` None (an admin) is not held."""
        if holder is not None and self.held.held_by(holder) > self._largest:
            self._refused.happened(self.held.held_by(holder))
            raise CodedRefusal(
                503, str(ANSWERS_UNREAD["message"]), "SERVICE_UNAVAILABLE", retry=True
            )

    async def send(
        self,
        response: Response,
        holder: str | None,
        wrote: bool,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        """Send `response`, holding a large one against its holder's budget until the client
        has taken nearly all of it. A mutation that ran past the budget (mutations sent side
        by side) is answered with an error that says it ran, and what to do: its answer is not
        held either."""
        size = len(response.body)
        if size <= HELD_ANSWER_BYTES or holder is None:
            await response(scope, receive, send)
            return
        if not self.held.take(holder, size):
            self._refused.happened(self.held.held_by(holder))
            headers = {k: v for k, v in response.headers.items() if k != "content-length"}
            if wrote:  # it ran: said so, in place of an answer that is not held
                refusal = Response(
                    self._encode({"data": None, "errors": [withheld_answer(size)]}),
                    status_code=response.status_code,
                    headers=headers,
                )
            else:
                refusal = Response(
                    self._encode({"errors": [ANSWERS_UNREAD]}),
                    status_code=503,
                    headers={**headers, "retry-after": "1"},
                )
            await refusal(scope, receive, send)
            return
        try:
            await response(scope, receive, in_pieces(send))
        finally:
            self.held.release(holder, size)
