"""The per-request context: who is asking, the caller's reads, and the services."""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, NoReturn, ParamSpec, Protocol, TypeVar

from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import FieldNode, GraphQLResolveInfo, GraphQLSchema, get_operation_ast
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext, Info
from strawberry.types.graphql import OperationType

from inmail.auth import AuthError, Viewer
from inmail.domain.access import ReadRefused
from inmail.schema.context import GraphContext
from inmail.schema.errors import (
    SEVERAL_AUTHORIZATIONS,
    SEVERAL_SOCKET_TOKENS,
    SOCKET_TOKEN_NOT_TEXT,
    TOKEN_EXPIRED_MESSAGE,
    UNKNOWN_MEMBER,
    ApiError,
    credentials_refused,
    refused,
    unauthenticated,
)
from inmail.services.reads import Reader

if TYPE_CHECKING:
    from inmail.auth import KnownMembers, TokenService
    from inmail.services.base import UseCase
    from inmail.services.live import Broker, InboxBroker
    from inmail.services.manual_clock import Deliveries
    from inmail.settings import Settings


P = ParamSpec("P")
R = TypeVar("R")


class Services(Protocol):
    """What a request may use of the running service (the composition root's `Container`)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def tokens(self) -> TokenService: ...

    @property
    def known_members(self) -> KnownMembers: ...

    def run(
        self, use_case: UseCase[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> Awaitable[R]: ...

    @property
    def live(self) -> Broker: ...

    def reader(
        self,
        viewer: Callable[[], Viewer | None],
        caller_id: Callable[[], str | None],
        refuse: Callable[[ReadRefused], Exception],
    ) -> Reader: ...

    def deadline(
        self, ends_by: float | None = None, *, timed: bool = True
    ) -> AbstractContextManager[None]: ...

    @property
    def inbox(self) -> InboxBroker: ...

    @property
    def webhooks(self) -> Deliveries | None: ...


@dataclass
class Credentials:
    """Who is asking, as far as the request has checked. The context owns it and so does its
    reader, which asks it on every check: apart from the context, so that neither the reader
    nor its loaders hold the context that holds them (no cycle outlives the request)."""

    websocket: bool
    checked: Viewer | None = None
    refusal: str | None = None
    resolved: bool = False
    asked_for_member: bool = False
    # An answer was built for a member token whose member turned out not to exist, and withheld.
    withheld: bool = False

    def viewer(self) -> Viewer | None:
        """The caller, or None when no credentials were sent; bad credentials are an error.

        On a websocket the token's `exp` ends the connection's authentication (SPEC 8: no
        operation runs on it after), without the clock skew an HTTP request is allowed.
        """
        if not self.resolved:
            raise RuntimeError("the request's credentials were not checked (authenticate)")
        if self.refusal is not None:
            raise unauthenticated(self.refusal)
        viewer = self.checked
        if viewer is not None and self.websocket and time.time() >= viewer.expires_at:
            raise unauthenticated(TOKEN_EXPIRED_MESSAGE)
        if viewer is not None and viewer.member_id is not None:
            self.asked_for_member = True
        return viewer

    def ends_at(self) -> float | None:
        """When the connection's authentication ends: a websocket's token's `exp` (unix
        seconds); None over HTTP, where a request is checked once."""
        viewer = self.checked
        if not self.websocket or viewer is None or math.isinf(viewer.expires_at):
            return None
        return viewer.expires_at

    def member_id(self) -> str | None:
        """The member the credentials name, checked or not."""
        return None if self.checked is None else self.checked.member_id

    def refuse(self, refusal: str) -> None:
        self.checked, self.refusal = None, refusal


@dataclass
class Context:
    container: Services
    request: Request | WebSocket
    response: Response | WebSocket | None = None
    auth_header: str | None = None
    # More than one Authorization header came: none of them counts.
    several_auth_headers: bool = False
    connection_params: dict[str, object] | None = None
    # The operation is a mutation (MutationsMarked): it may have changed something, so an
    # answer refused for its caller's unread answers says it was applied (AnswerBudget.send).
    wrote: bool = False
    credentials: Credentials = field(init=False)
    reads: Reader = field(init=False)

    def __post_init__(self) -> None:
        self.credentials = Credentials(websocket=isinstance(self.request, WebSocket))
        self.reads = self.container.reader(
            self.credentials.viewer, self.credentials.member_id, refused
        )

    def run(self, use_case: UseCase[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        """`use_case(deps, *args, **kwargs)` on the service's dependencies: a resolver calls a
        use case through this, and never holds the repositories itself."""
        return self.container.run(use_case, *args, **kwargs)

    @property
    def live(self) -> Broker:
        return self.container.live

    @property
    def settings(self) -> Settings:
        return self.container.settings

    async def authenticate(self) -> None:
        """Check the credentials once: the token here, the member's record in confirm_member.

        Over HTTP the token is the Authorization header's. On a websocket it is the one
        connection_init carried (SPEC 8), under `Authorization` however cased, whatever the
        handshake's header says; only without one there, a bearer token in the handshake's
        header counts. A browser may send a proxy's Basic credentials on the handshake by
        itself: they are not the client's token. Several keys in the payload, or several
        headers on the handshake when the payload has none, are refused, as several headers
        are over HTTP: which one counts would depend on who reads them.
        """
        header = self.auth_header
        if isinstance(self.request, WebSocket):
            given = [  # an empty or null key is no token, as no key is
                value
                for key, value in (self.connection_params or {}).items()
                if key.lower() == "authorization" and value not in (None, "")
            ]
            raw = given[0] if len(given) == 1 else None
            refusal = None
            if len(given) > 1:
                refusal = SEVERAL_SOCKET_TOKENS
            elif not given and self.several_auth_headers:
                refusal = SEVERAL_AUTHORIZATIONS
            elif raw is not None and not isinstance(raw, str):
                refusal = SOCKET_TOKEN_NOT_TEXT  # a number, a list: a mistake, not no token
            if refusal is not None:
                self.credentials.refuse(refusal)
                self.credentials.resolved = True
                return
            if isinstance(raw, str):
                header = raw
            elif not _is_bearer(header):
                header = None
        try:
            self.credentials.checked = self.container.tokens.viewer_from_header(header)
        except AuthError as exc:
            self.credentials.refuse(credentials_refused(exc))
        self.credentials.resolved = True

    async def confirm_member(self) -> bool:
        """Whether a member token's member exists; when not, the token is refused from now on.

        The record is read through this request's member loader: when resolvers read the
        member anyway (or read it already, in the same batch as what else they needed) the
        check costs no round trip of its own. The API deletes no member, so a member this
        process found lately is not looked up again (`KnownMembers`), unless this request's
        reads found its record missing.
        """
        member_id = self.credentials.member_id()
        known = self.container.known_members
        if member_id is None:
            return True
        if self.reads.found_missing(member_id):
            self._refuse_unknown(member_id)
            return False
        if known.seen(member_id):
            return True
        if await self.reads.load_member(member_id) is not None:
            known.add(member_id)
            return True
        self._refuse_unknown(member_id)
        return False

    def own_record_missing(self) -> ApiError | None:
        """For a member's token, when a use case found that member's own record missing
        (erased since this process last found it): the token is refused from now on, as any
        whose member does not exist, and this is the error to raise. None for an admin's."""
        member_id = self.credentials.member_id()
        if member_id is None:
            return None
        self._refuse_unknown(member_id)
        return unauthenticated(UNKNOWN_MEMBER)

    def _refuse_unknown(self, member_id: str) -> None:
        """The token's member has no record: forgotten as found, the token refused from now."""
        self.container.known_members.forget(member_id)
        self.credentials.refuse(UNKNOWN_MEMBER)

    @property
    def caller_known(self) -> bool:
        """Whether the request came with credentials that were checked and hold (a member's or
        an admin's token): metrics let only such callers name new operations."""
        credentials = self.credentials
        return (
            credentials.resolved and credentials.refusal is None and credentials.checked is not None
        )

    @property
    def answer_withheld(self) -> bool:
        """Whether this run's answer was withheld, to be answered by a run under refused
        credentials (`MemberMustExist`); metrics count that run alone."""
        return self.credentials.withheld

    @property
    def asked_for_member(self) -> bool:
        """Whether a resolver of this request acted on a member token's behalf."""
        return self.credentials.asked_for_member

    def viewer(self) -> Viewer | None:
        """The caller, or None when no credentials were sent; bad credentials are an error."""
        return self.credentials.viewer()

    # The access checks of SPEC 8 live with the reads (services/reads.py) and the services,
    # by the rules of domain/access.py.

    def require_member(self) -> str:
        return self.reads.acting_member()


if TYPE_CHECKING:
    ResolverInfo = Info[Context, None]
else:
    ResolverInfo = Info


def ctx(info: ResolverInfo) -> Context:
    return info.context


def _serves_the_schema(context: Context) -> GraphContext:
    """The schema's types see this context through `GraphContext` only."""
    return context


def _is_bearer(header: str | None) -> bool:
    return header is not None and header.strip().lower().startswith("bearer ")


RAN_A_MUTATION: ContextVar[bool] = ContextVar("inmail_ran_a_mutation", default=False)
"""Set in the task that runs a mutation, from its start: an HTTP request's, or a websocket
operation's own (a socket's operations share their `Context`, not their task)."""


class MutationsMarked(SchemaExtension):
    """Tells the request's context, and the task that runs it, before the operation runs, that
    it is a mutation."""

    def on_execute(self) -> Iterator[None]:
        execution = self.execution_context
        context = execution.context
        if execution.operation_type is OperationType.MUTATION:
            RAN_A_MUTATION.set(True)
            if isinstance(context, Context):
                context.wrote = True
        yield


class DatabaseDeadline(SchemaExtension):
    """A query or mutation waits on the database INMAIL_DATABASE_TIMEOUT at most, all its reads,
    transactions and retries together (a hung or unreachable primary would otherwise hold it for
    minutes); past it the operation fails with SERVICE_UNAVAILABLE. On a websocket no
    transaction of the operation commits from its token's `exp` on (rolled back: UNAUTHENTICATED,
    though the socket is closing and nothing more is sent). A subscription is not
    bounded: it lives as long as its socket; nor is a document of an admin's `advanceClock`
    alone, which runs every job of up to a year of a manual clock (demos and tests only) and
    may rightly take longer (a mutation beside it is bounded; and over a websocket, its
    transactions too commit only before the token's `exp`).

    Listed before MemberMustExist, whose reads it then bounds too; the loaders' batches run in
    tasks made under it, which inherit the deadline.
    """

    def on_execute(self) -> Iterator[None]:
        execution = self.execution_context
        context = execution.context
        if execution.operation_type is OperationType.SUBSCRIPTION or not isinstance(
            context, Context
        ):
            yield
            return
        # Only a document of advanceClock alone goes without the timeout: a mutation beside it
        # is bounded as any other. (Only a mutation's root fields are looked at.)
        timed = not (
            execution.operation_type is OperationType.MUTATION
            and (roots := _root_fields(execution))
            and roots <= _UNBOUNDED_MUTATIONS
        )
        # On a websocket, nothing an operation writes is written after its token's exp: no
        # transaction of it commits from then on, whether or not the close has stopped it yet.
        with context.container.deadline(context.credentials.ends_at(), timed=timed):
            yield


_UNBOUNDED_MUTATIONS: Final = frozenset({"advanceClock"})


def _root_fields(execution: ExecutionContext) -> frozenset[str]:
    """The names of the fields the operation selects at its root (not through fragments)."""
    document = execution.graphql_document
    operation = None if document is None else get_operation_ast(document, execution.operation_name)
    if operation is None:
        return frozenset()
    return frozenset(
        selection.name.value
        for selection in operation.selection_set.selections
        if isinstance(selection, FieldNode)
    )


class MemberMustExist(SchemaExtension):
    """A member token whose member does not exist is UNAUTHENTICATED, on every operation.

    A mutation checks before it runs (it may write). A query checks after its resolvers, when
    one of them acted for the member: the member's record is then in the loader already, or
    was read in the same batch as the rest, and an answer built for a member who does not
    exist is withheld (`Credentials.withheld`); the HTTP view then runs the query once more
    under the refused credentials, so that it is answered as any bad token's is: each field
    that needs the member fails, the others answer. Websockets check once, at connection_init.
    """

    async def on_execute(self) -> AsyncIterator[None]:
        execution = self.execution_context
        context = execution.context
        if not isinstance(context, Context) or isinstance(context.request, WebSocket):
            yield
            return
        if execution.operation_type is OperationType.MUTATION:
            await context.confirm_member()
            yield
            return
        yield
        result = execution.result
        if (
            context.asked_for_member
            and isinstance(result, GraphQLExecutionResult)
            and not await context.confirm_member()
        ):
            result.data = None
            result.errors = [unauthenticated(UNKNOWN_MEMBER)]
            context.credentials.withheld = True


def refuse_unknown_members_on_failure(schema: GraphQLSchema) -> None:
    """A root query field that fails for a member token whose member does not exist (a
    service's "your member record does not exist") fails as UNAUTHENTICATED, not as a bug.

    Only the failure path looks: the member is then in the request's loader already.
    """
    query = schema.query_type
    if query is None:
        return
    for root_field in query.fields.values():
        resolve = root_field.resolve
        if resolve is None or isinstance(resolve, _RefusingUnknownMembers):
            continue
        root_field.resolve = _RefusingUnknownMembers(resolve)


T = TypeVar("T")


async def _explain(context: object, error: Exception) -> NoReturn:
    if isinstance(context, Context) and not await context.confirm_member():
        raise unauthenticated(UNKNOWN_MEMBER) from None
    raise error


async def _awaited(context: object, pending: Awaitable[T]) -> T:
    try:
        return await pending
    except ApiError:
        raise
    except Exception as error:
        return await _explain(context, error)


class _RefusingUnknownMembers:
    """A root field's resolver whose failure, for a member who does not exist, is explained."""

    def __init__(self, resolve: Callable[..., object]) -> None:
        self._resolve = resolve

    def __call__(
        self, source: object, info: GraphQLResolveInfo[object], **kwargs: object
    ) -> object:
        try:
            result = self._resolve(source, info, **kwargs)
        except ApiError:
            raise
        except Exception as error:
            return _explain(info.context, error)
        if inspect.isawaitable(result):
            return _awaited(info.context, result)
        return result
