"""Who is calling: the principal a verified access token describes, and tenant scoping.

Auth issues the tokens; every other service verifies them locally (see
``tmsp_common.tokens``) through :class:`TokenVerifier`, installed as a gRPC interceptor in
``tmsp_common.grpc_server``. Use cases read the caller with :func:`current_principal` and
check tenancy with :meth:`Principal.require_account`.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from tmsp_common.errors import NotFound, PermissionDenied, Unauthenticated


class Role(StrEnum):
    ACCOUNT_ADMINISTRATOR = "account_administrator"
    ANALYST = "analyst"
    PROVIDER_OPERATOR = "provider_operator"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    user_id: str
    account_id: str
    roles: frozenset[Role]
    session_id: str = ""
    factors: tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_operator(self) -> bool:
        """Provider operators work across accounts."""
        return Role.PROVIDER_OPERATOR in self.roles

    def require_account(self, account_id: str) -> None:
        """Raise NotFound (never revealing the account exists) unless the caller may see it."""
        if not self.is_operator and account_id != self.account_id:
            raise NotFound("account not found")

    def require_role(self, *roles: Role) -> None:
        """Raise PermissionDenied unless the caller has one of ``roles`` (operators pass)."""
        if self.is_operator or self.roles.intersection(roles):
            return
        raise PermissionDenied("role not allowed: needs " + " or ".join(r.value for r in roles))

    def can_write(self) -> bool:
        return self.is_operator or Role.ACCOUNT_ADMINISTRATOR in self.roles


class TokenVerifier(Protocol):
    """Turns a bearer token into a principal or raises :class:`Unauthenticated`."""

    async def verify(self, token: str) -> Principal: ...


_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "tmsp_principal", default=None
)


def set_principal(principal: Principal | None) -> contextvars.Token[Principal | None]:
    return _principal.set(principal)


def reset_principal(token: contextvars.Token[Principal | None]) -> None:
    _principal.reset(token)


def current_principal() -> Principal:
    """The caller of the current request; Unauthenticated outside an authenticated call."""
    principal = _principal.get()
    if principal is None:
        raise Unauthenticated("authentication required")
    return principal
