"""Use cases of customer accounts and their users, with role checks and tenant scoping.

Provider operators manage every account; account administrators manage their own account
and its users; analysts only read their own account. A resource of another tenant is
always NOT_FOUND (never revealing that it exists).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tmsp_auth.adapters.events import AuditKind
from tmsp_auth.adapters.repositories import UserRepository
from tmsp_auth.domain.passwords import check_password_policy
from tmsp_auth.service_layer.auth import AuthUseCases
from tmsp_auth.service_layer.context import AuthContext, normalize_email
from tmsp_common.authn import Principal, Role
from tmsp_common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from tmsp_common.mongo import Document

ADMIN_FIELDS = {"company_name", "time_zone", "managed_by_user_id"}
OPERATOR_FIELDS = ADMIN_FIELDS | {"name", "services", "valid_from", "valid_until"}


@dataclass
class AccountFields:
    name: str = ""
    company_name: str = ""
    services: list[str] = field(default_factory=list)
    managed_by_user_id: str = ""
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    time_zone: str = "UTC"


def _check_name(name: str) -> str:
    value = name.strip()
    if not value:
        raise InvalidArgument("account.name", "is required")
    if len(value) > 100:
        raise InvalidArgument("account.name", "must be at most 100 characters")
    return value


def _check_zone(zone: str) -> str:
    value = zone.strip() or "UTC"
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidArgument("account.time_zone", "is not an IANA time zone") from exc
    return value


def _check_services(services: list[str]) -> list[str]:
    out = sorted({s.strip() for s in services if s.strip()})
    if any(len(s) > 64 for s in out):
        raise InvalidArgument("account.services", "names must be at most 64 characters")
    return out


def _check_validity(start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and end <= start:
        raise InvalidArgument("account.valid_until", "must be after valid_from")


class AccountUseCases:
    def __init__(self, ctx: AuthContext, auth: AuthUseCases) -> None:
        self.ctx = ctx
        self.auth = auth

    def _now(self) -> datetime:
        return self.ctx.clock.now()

    async def _account(self, principal: Principal, account_id: str) -> Document:
        principal.require_account(account_id)
        doc = await self.ctx.accounts.get(account_id)
        if doc is None:
            raise NotFound("account not found")
        return doc

    async def _owner_email(self, account_id: str, user_id: str) -> str:
        if not user_id:
            return ""
        user = await self.ctx.users.get(user_id)
        if user is None or user["account_id"] != account_id:
            raise InvalidArgument("account.managed_by_user_id", "is not a user of this account")
        return str(user["email"])

    async def create_account(
        self, principal: Principal | None, fields: AccountFields, *, provider: bool = False
    ) -> Document:
        """Create an account (operators; ``principal`` None for the bootstrap CLI)."""
        if principal is not None:
            principal.require_role(Role.PROVIDER_OPERATOR)
        name = _check_name(fields.name)
        zone = _check_zone(fields.time_zone)
        services = _check_services(fields.services)
        _check_validity(fields.valid_from, fields.valid_until)
        if fields.managed_by_user_id:
            raise InvalidArgument("account.managed_by_user_id", "set it once the user exists")
        now = self._now()
        doc: Document = {
            "_id": uuid.uuid4().hex,
            "name": name,
            "name_norm": name.lower(),
            "company_name": fields.company_name.strip(),
            "services": services,
            "managed_by_user_id": "",
            "managed_by_email": "",
            "valid_from": fields.valid_from,
            "valid_until": fields.valid_until,
            "time_zone": zone,
            "version": 1,
            "deleted": False,
            "provider": provider,
            "created_at": now,
            "updated_at": now,
        }
        await self.ctx.accounts.insert(doc)
        await self.ctx.events.account_changed(doc)
        return doc

    async def update_account(
        self, principal: Principal, account_id: str, fields: AccountFields, mask: list[str]
    ) -> Document:
        current = await self._account(principal, account_id)
        principal.require_role(Role.ACCOUNT_ADMINISTRATOR)
        if not mask:
            raise InvalidArgument("update_mask", "name at least one field")
        allowed = OPERATOR_FIELDS if principal.is_operator else ADMIN_FIELDS
        unknown = [m for m in mask if m not in OPERATOR_FIELDS]
        if unknown:
            raise InvalidArgument("update_mask", f"unknown field {unknown[0]!r}")
        denied = [m for m in mask if m not in allowed]
        if denied:
            raise PermissionDenied(f"only provider operators may change {denied[0]}")
        changes: Document = {}
        for name in mask:
            if name == "name":
                changes["name"] = _check_name(fields.name)
                changes["name_norm"] = changes["name"].lower()
            elif name == "company_name":
                changes["company_name"] = fields.company_name.strip()
            elif name == "services":
                changes["services"] = _check_services(fields.services)
            elif name == "time_zone":
                changes["time_zone"] = _check_zone(fields.time_zone)
            elif name == "valid_from":
                changes["valid_from"] = fields.valid_from
            elif name == "valid_until":
                changes["valid_until"] = fields.valid_until
            elif name == "managed_by_user_id":
                owner = fields.managed_by_user_id
                changes["managed_by_user_id"] = owner
                changes["managed_by_email"] = await self._owner_email(account_id, owner)
        _check_validity(
            changes.get("valid_from", current.get("valid_from")),
            changes.get("valid_until", current.get("valid_until")),
        )
        doc = await self.ctx.accounts.update(account_id, changes, self._now())
        if doc is None:
            raise NotFound("account not found")
        await self.ctx.events.account_changed(doc)
        return doc

    async def delete_account(self, principal: Principal, account_id: str, confirm: str) -> None:
        current = await self._account(principal, account_id)
        principal.require_role(Role.PROVIDER_OPERATOR)
        if confirm != current["name"]:
            raise InvalidArgument("confirm_account_name", "must equal the account's name")
        if current.get("provider"):
            raise FailedPrecondition("the provider's own account cannot be deleted")
        doc = await self.ctx.accounts.update(
            account_id,
            {"deleted": True, "name_norm": f"{current['name_norm']}#deleted#{account_id}"},
            self._now(),
        )
        if doc is None:
            raise NotFound("account not found")
        await self.ctx.users.disable_account_users(account_id)
        await self.ctx.sessions.revoke_account(account_id, "account deleted")
        await self.ctx.events.account_changed(doc)

    async def get_account(self, principal: Principal, account_id: str) -> Document:
        return await self._account(principal, account_id)

    async def list_accounts(self, principal: Principal) -> list[Document]:
        if principal.is_operator:
            return await self.ctx.accounts.find_all()
        return await self.ctx.accounts.find_all(principal.account_id)

    # -- users -------------------------------------------------------------------------

    async def _target_user(self, principal: Principal, user_id: str) -> Document:
        user = await self.ctx.users.get(user_id) if user_id else None
        if user is None:
            raise NotFound("user not found")
        try:
            principal.require_account(str(user["account_id"]))
        except NotFound:
            raise NotFound("user not found") from None
        principal.require_role(Role.ACCOUNT_ADMINISTRATOR)
        return user

    async def add_user(
        self,
        account_id: str,
        email: str,
        display_name: str,
        roles: list[Role],
        *,
        password: str | None = None,
        reveal_conflicts: bool = False,
    ) -> Document:
        """Store a user; with ``password`` (bootstrap CLI) it is set, else an invite is sent.

        ``reveal_conflicts``: the caller sees every account (a provider operator), so an
        address in use in another account is AlreadyExists rather than a held user."""
        if not roles:
            raise InvalidArgument("roles", "give at least one role")
        email_norm = normalize_email(email, strict=True)
        if password is not None:
            check_password_policy(password, field="password", email=email_norm)
        doc: Document = {
            "_id": uuid.uuid4().hex,
            "account_id": account_id,
            "email": email.strip(),
            "email_norm": email_norm,
            "display_name": display_name.strip()[:200],
            "roles": sorted({r.value for r in roles}),
            "created_at": self._now(),
            **UserRepository.new_user_fields(),
        }
        if password is not None:
            doc["password_hash"] = await self.ctx.hash_password(password)
        held = await self._insert_user(doc, email_norm, reveal=reveal_conflicts)
        publications = [
            self.ctx.events.audit(
                AuditKind.AUTH_AUDIT_KIND_USER_CREATED,
                user_id=str(doc["_id"]),
                account_id=account_id,
                email=email_norm,
                detail=",".join(doc["roles"]),
            )
        ]
        await self.ctx.events.all(*publications)
        if password is None:
            await self.auth.issue_password_link(doc, invite=True, held=held)
        return doc

    async def _insert_user(self, doc: Document, email_norm: str, *, reveal: bool) -> bool:
        """Store a new user; True when it is stored held (see ``UserRepository.held_fields``).

        An address signs in to one user. When it already does in another account, telling
        the administrator so would reveal that account's user: the new user is stored held
        instead and answered like any invitation (its invitee is told by email why no link
        came). Only the same address twice in one account is AlreadyExists."""
        users, account_id = self.ctx.users, str(doc["account_id"])
        duplicate = AlreadyExists("a user with this email already exists")
        if await users.in_account_with_email(account_id, email_norm) is not None:
            raise duplicate
        try:
            await users.insert(doc)
            return False
        except AlreadyExists:
            holder = await users.by_email(email_norm)
            if holder is None or str(holder["account_id"]) == account_id:
                raise
        if reveal:
            raise AlreadyExists("this email signs in to a user of another account")
        # one held user per address and account, however many concurrent requests
        claim = f"held-email:{account_id}:{self.ctx.code_hasher.digest(email_norm)}"
        if not await users.markers.claim(claim, user_id=str(doc["_id"]), kind="held-email"):
            raise duplicate
        doc.update(UserRepository.held_fields(str(doc["_id"]), email_norm))
        await users.insert(doc)
        return True

    async def create_user(
        self,
        principal: Principal,
        account_id: str,
        email: str,
        display_name: str,
        roles: list[Role],
    ) -> Document:
        account = await self._account(principal, account_id)
        principal.require_role(Role.ACCOUNT_ADMINISTRATOR)
        if Role.PROVIDER_OPERATOR in roles and not (
            principal.is_operator and account.get("provider")
        ):
            raise PermissionDenied("provider operators exist only in the provider account")
        return await self.add_user(
            account_id, email, display_name, roles, reveal_conflicts=principal.is_operator
        )

    async def disable_user(self, principal: Principal, user_id: str) -> None:
        user = await self._target_user(principal, user_id)
        await self.ctx.users.set_fields(user_id, {"disabled": True})
        await self.ctx.sessions.revoke_user(user_id, "user disabled")
        await self.ctx.events.audit(
            AuditKind.AUTH_AUDIT_KIND_USER_DISABLED,
            user_id=user_id,
            account_id=str(user["account_id"]),
            email=str(user["email"]),
            detail=f"by {principal.user_id}",
        )

    async def list_users(self, principal: Principal, account_id: str) -> list[Document]:
        """The users, each with ``locked_until`` from its lockout state."""
        await self._account(principal, account_id)
        users = await self.ctx.users.list_for_account(account_id)
        locks = await self.ctx.users.lockouts_of([str(u["_id"]) for u in users])
        return [
            {**u, "locked_until": locks.get(str(u["_id"]), {}).get("locked_until")} for u in users
        ]

    async def unlock_user(self, principal: Principal, user_id: str) -> None:
        user = await self._target_user(principal, user_id)
        await self.ctx.users.unlock(user_id)
        await self.ctx.events.audit(
            AuditKind.AUTH_AUDIT_KIND_UNLOCKED,
            user_id=user_id,
            account_id=str(user["account_id"]),
            email=str(user["email"]),
            detail=f"by {principal.user_id}",
        )
