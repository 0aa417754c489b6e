"""The per-request context: who is asking, the services, and this request's DataLoaders."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.websockets import WebSocket
from strawberry.dataloader import DataLoader

from inmail.auth import AuthError, Viewer
from inmail.domain.credits import CreditLot
from inmail.domain.model import Conversation, Member
from inmail.schema.errors import bad_input, forbidden, unauthenticated

if TYPE_CHECKING:
    from inmail.bootstrap import Container
    from inmail.services.base import Deps


DEFAULT_PAGE_SIZE = 20


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
    _resolved: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.loaders = Loaders(self.container.deps)

    @property
    def deps(self) -> Deps:
        return self.container.deps

    async def authenticate(self) -> None:
        """Resolve the caller once, before any resolver: the token, and its member's record.

        A member token whose member does not exist is refused like a bad token, here, so that
        every field and mutation (and a websocket at connect time) says UNAUTHENTICATED alike.
        The member is read through this request's loader: a resolver that reads it again costs
        no round trip.
        """
        header = self.auth_header
        if header is None and self.connection_params is not None:
            raw = self.connection_params.get("Authorization") or self.connection_params.get(
                "authorization"
            )
            header = raw if isinstance(raw, str) else None
        try:
            viewer = self.container.tokens.viewer_from_header(header)
        except AuthError as exc:
            viewer, self._refusal = None, f"Invalid credentials: {exc}."
        member_id = None if viewer is None else viewer.member_id
        if member_id is not None and await self.loaders.member.load(member_id) is None:
            viewer, self._refusal = None, "Invalid credentials: the token's member does not exist."
        self._viewer, self._resolved = viewer, True

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
