"""/graphql on Strawberry's ASGI view: HTTP, GraphiQL and both websocket subprotocols.

`view.py` is the view itself (`GraphQLApp`: the HTTP exchange, the answer's status and media
type, the websocket handshake); beside it, each concern it answers before any resolver runs:
`websockets.py` (the protocol handlers, message pace, a token's lifetime, sockets per member),
`json_text.py` (bounded JSON in, compact JSON out), `media_types.py` (Accept and
Content-Type), `documents.py` (several operations, one that never ran), `answers.py` (large
answers held while their client reads them), `refusals.py` (a request refused before it ran)
and `cors.py` (browser pages on other origins).
"""

from typing import Final

LOGGER: Final = "inmail.graphql_app"
"""The logger of every module here: the name /graphql's log lines have always carried (a log
filter or alert keyed on it keeps matching)."""
