"""The per-request context: who is asking, the caller's reads, and the services."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.websockets import WebSocket
from strawberry.types import Info

from inmail.auth import AuthError, Viewer
from inmail.schema.context import GraphContext
from inmail.schema.errors import refused, unauthenticated
from inmail.services.reads import Reader

if TYPE_CHECKING:
    from inmail.bootstrap import Container
    from inmail.services.base import Deps
    from inmail.services.live import Broker
    from inmail.services.payments import PaymentGateway
    from inmail.settings import Settings


@dataclass
class Context:
    container: Container
    request: Request | WebSocket
    response: Any = None
    auth_header: str | None = None
    connection_params: dict[str, Any] | None = None
    reads: Reader = field(init=False)
    _viewer: Viewer | None = field(default=None, init=False)
    _resolved: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        deps = self.container.deps
        self.reads = Reader(
            self.viewer,
            deps.reads,
            clock=deps.now,
            plans=deps.plans,
            max_page_size=self.container.settings.max_page_size,
            refuse=refused,
        )

    @property
    def deps(self) -> Deps:
        return self.container.deps

    @property
    def gateway(self) -> PaymentGateway:
        return self.container.gateway

    @property
    def live(self) -> Broker:
        return self.container.live

    @property
    def settings(self) -> Settings:
        return self.container.settings

    def viewer(self) -> Viewer | None:
        """The caller, or None when no credentials were sent; bad credentials are an error."""
        if not self._resolved:
            header = self.auth_header
            if header is None and self.connection_params is not None:
                raw = self.connection_params.get("Authorization") or self.connection_params.get(
                    "authorization"
                )
                header = raw if isinstance(raw, str) else None
            try:
                self._viewer = self.container.tokens.viewer_from_header(header)
            except AuthError as exc:
                raise unauthenticated(f"Invalid credentials: {exc}.") from None
            self._resolved = True
        return self._viewer

    # The access checks of SPEC 8 live with the reads (services/reads.py, domain/access.py).

    def require_viewer(self) -> Viewer:
        return self.reads.signed_in()

    def require_member(self) -> str:
        return self.reads.acting_member()

    def require_admin(self) -> Viewer:
        return self.reads.admin()

    def require_owner_or_admin(self, member_id: str) -> Viewer:
        return self.reads.owner_or_admin(member_id)


if TYPE_CHECKING:
    ResolverInfo = Info[Context, None]
else:
    ResolverInfo = Info


def ctx(info: ResolverInfo) -> Context:
    return info.context


def _serves_the_schema(context: Context) -> GraphContext:
    """The schema's types see this context through `GraphContext` only."""
    return context
