"""The per-request context: who is asking, the services, and this request's DataLoaders."""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import GraphQLSchema
from starlette.requests import Request
from starlette.websockets import WebSocket
from strawberry.dataloader import DataLoader
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from inmail.auth import AuthError, Viewer
from inmail.domain.credits import CreditLot
from inmail.domain.model import Conversation, Member
from inmail.schema.errors import ApiError, bad_input, forbidden, unauthenticated

if TYPE_CHECKING:
    from inmail.bootstrap import Container
    from inmail.services.base import Deps


DEFAULT_PAGE_SIZE = 20
UNKNOWN_MEMBER = "Invalid credentials: the token's member does not exist."


class Loaders:
    """Batch every to-one lookup of a request into one query per kind."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.member = DataLoader[str, Member | None](self._members)
        self.lot = DataLoader[str, CreditLot | None](self._lots)
        self.conversation = DataLoader[str, Conversation | None](self._conversations)
        self.balance = DataLoader[str, int](self._balances)

    async def _members(self, ids: list[str]) -> list[Member | None]:
        found = await self.deps.members.get_many(ids)
        return [found.get(i) for i in ids]

    async def _lots(self, ids: list[str]) -> list[CreditLot | None]:
        found = await self.deps.lots.get_many(ids)
        return [found.get(i) for i in ids]

    async def _conversations(self, ids: list[str]) -> list[Conversation | None]:
        found = await self.deps.conversations.get_many(ids)
        return [found.get(i) for i in ids]

    async def _balances(self, ids: list[str]) -> list[int]:
        found = await self.deps.lots.balances(ids, self.deps.now())
        return [found[i] for i in ids]

    def clear(self) -> None:
        for loader in (self.member, self.lot, self.conversation, self.balance):
            loader.clear_all()


@dataclass
class Context:
    container: Container
    request: Request | WebSocket
    response: Any = None
    auth_header: str | None = None
    connection_params: dict[str, Any] | None = None
    loaders: Loaders = field(init=False)
    _viewer: Viewer | None = field(default=None, init=False)
    _refusal: str | None = field(default=None, init=False)
    _asked_for_member: bool = field(default=False, init=False)
    _resolved: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.loaders = Loaders(self.container.deps)

    @property
    def deps(self) -> Deps:
        return self.container.deps

    async def authenticate(self) -> None:
        """Check the credentials once: the token here, the member's record in confirm_member."""
        header = self.auth_header
        if header is None and self.connection_params is not None:
            raw = self.connection_params.get("Authorization") or self.connection_params.get(
                "authorization"
            )
            header = raw if isinstance(raw, str) else None
        try:
            self._viewer = self.container.tokens.viewer_from_header(header)
        except AuthError as exc:
            self._viewer, self._refusal = None, f"Invalid credentials: {exc}."
        self._resolved = True

    async def confirm_member(self) -> bool:
        """Whether a member token's member exists; when not, the token is refused from now on.

        The record is read through this request's member loader: when resolvers read the
        member anyway (or read it already, in the same batch as what else they needed) the
        check costs no round trip of its own.
        """
        member_id = None if self._viewer is None else self._viewer.member_id
        if member_id is None:
            return True
        if await self.loaders.member.load(member_id) is not None:
            return True
        self._viewer, self._refusal = None, UNKNOWN_MEMBER
        return False

    @property
    def asked_for_member(self) -> bool:
        """Whether a resolver of this request acted on a member token's behalf."""
        return self._asked_for_member

    def authenticated_viewer(self) -> Viewer | None:
        """The caller once authenticated, whether or not the token has expired since."""
        return self._viewer

    def viewer(self) -> Viewer | None:
        """The caller, or None when no credentials were sent; bad credentials are an error.

        On a websocket the token's `exp` ends the connection's authentication (no leeway).
        """
        if not self._resolved:
            raise RuntimeError("the request's credentials were not checked (authenticate)")
        if self._refusal is not None:
            raise unauthenticated(self._refusal)
        viewer = self._viewer
        if (
            viewer is not None
            and isinstance(self.request, WebSocket)
            and time.time() >= viewer.expires_at
        ):
            raise unauthenticated("Invalid credentials: the token has expired.")
        if viewer is not None and viewer.member_id is not None:
            self._asked_for_member = True
        return viewer

    def require_viewer(self) -> Viewer:
        viewer = self.viewer()
        if viewer is None:
            raise unauthenticated()
        return viewer

    def require_member(self) -> str:
        viewer = self.require_viewer()
        if viewer.member_id is None:
            raise forbidden("This needs a member's token, not an admin's.")
        return viewer.member_id

    def require_admin(self) -> Viewer:
        viewer = self.require_viewer()
        if not viewer.is_admin:
            raise forbidden("Only admins may do this.")
        return viewer

    def require_owner_or_admin(self, member_id: str) -> Viewer:
        viewer = self.require_viewer()
        if not viewer.is_admin and viewer.member_id != member_id:
            raise forbidden("Only this member (or an admin) can see this.")
        return viewer

    def page_size(self, first: int | None) -> int:
        maximum = self.container.settings.max_page_size
        if first is None:
            return min(DEFAULT_PAGE_SIZE, maximum)
        if not 0 <= first <= maximum:
            raise bad_input(f"first must be between 0 and {maximum}.")
        return first


class MemberMustExist(SchemaExtension):
    """A member token whose member does not exist is UNAUTHENTICATED, on every operation.

    A mutation checks before it runs (it may write). A query checks after its resolvers, when
    one of them acted for the member: the member's record is then in the loader already, or
    was read in the same batch as the rest, and an answer built for a member who does not
    exist is replaced by the refusal. Websockets check once, at connection_init.
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
        if resolve is None or getattr(resolve, "_refuses_unknown_members", False):
            continue
        root_field.resolve = _refusing_unknown_members(resolve)


def _refusing_unknown_members(resolve: Callable[..., Any]) -> Callable[..., Any]:
    async def explain(context: Any, error: Exception) -> Any:
        if isinstance(context, Context) and not await context.confirm_member():
            raise unauthenticated(UNKNOWN_MEMBER) from None
        raise error

    async def awaited(context: Any, pending: Awaitable[Any]) -> Any:
        try:
            return await pending
        except ApiError:
            raise
        except Exception as error:
            return await explain(context, error)

    def refusing(source: Any, info: Any, **kwargs: Any) -> Any:
        try:
            result = resolve(source, info, **kwargs)
        except ApiError:
            raise
        except Exception as error:
            return explain(info.context, error)
        if inspect.isawaitable(result):
            return awaited(info.context, result)
        return result

    refusing._refuses_unknown_members = True  # type: ignore[attr-defined]
    return refusing
