"""gRPC servicers: proto to command, call the use case, result to proto. Nothing else."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from tmsp.auth.v1 import auth_pb2, auth_pb2_grpc
from tmsp_auth.adapters.repositories import aware
from tmsp_auth.bootstrap import App
from tmsp_auth.service_layer.accounts import AccountFields
from tmsp_auth.service_layer.auth import SessionTokens
from tmsp_common.authn import Role, current_principal
from tmsp_common.errors import InvalidArgument
from tmsp_common.kafka.envelope import from_timestamp, to_timestamp
from tmsp_common.mongo import Document
from tmsp_common.paging import decode_time_token, next_page_token, page_size

Ctx = Any

PUBLIC_METHODS = [
    f"/tmsp.auth.v1.AuthService/{name}"
    for name in (
        "Login",
        "VerifySecondFactor",
        "Refresh",
        "GetSigningKeys",
        "RequestPasswordReset",
        "ResetPassword",
        "RequestEmergencyCode",
    )
]

_PROMPTS = {
    auth_pb2.TWO_FACTOR_PROMPT_CONTINUE_TO_SETTINGS: "continue_to_settings",
    auth_pb2.TWO_FACTOR_PROMPT_DO_NOT_SHOW_AGAIN: "do_not_show_again",
    auth_pb2.TWO_FACTOR_PROMPT_SKIP_FOR_NOW: "skip_for_now",
}
_ROLE_TO_PB = {
    Role.ACCOUNT_ADMINISTRATOR: auth_pb2.ROLE_ACCOUNT_ADMINISTRATOR,
    Role.ANALYST: auth_pb2.ROLE_ANALYST,
    Role.PROVIDER_OPERATOR: auth_pb2.ROLE_PROVIDER_OPERATOR,
}
_PB_TO_ROLE = {v: k for k, v in _ROLE_TO_PB.items()}


def _ts(when: datetime | None) -> Timestamp | None:
    return to_timestamp(when) if when is not None else None


def session_pb(s: SessionTokens) -> auth_pb2.Session:
    return auth_pb2.Session(
        access_token=s.access_token,
        refresh_token=s.refresh_token,
        access_token_expires_at=to_timestamp(s.access_expires_at),
        session_id=s.session_id,
        user_id=s.user_id,
        account_id=s.account_id,
    )


def account_pb(doc: Document) -> auth_pb2.Account:
    msg = auth_pb2.Account(
        account_id=str(doc["_id"]),
        name=str(doc.get("name", "")),
        company_name=str(doc.get("company_name", "")),
        services=list(doc.get("services", [])),
        managed_by_user_id=str(doc.get("managed_by_user_id", "")),
        managed_by_email=str(doc.get("managed_by_email", "")),
        time_zone=str(doc.get("time_zone", "")),
        version=int(doc.get("version", 0)),
        provider=bool(doc.get("provider", False)),
    )
    for name in ("valid_from", "valid_until"):
        value = doc.get(name)
        if isinstance(value, datetime):
            getattr(msg, name).CopyFrom(to_timestamp(value))
    return msg


def user_pb(doc: Document, now: datetime) -> auth_pb2.User:
    msg = auth_pb2.User(
        user_id=str(doc["_id"]),
        account_id=str(doc["account_id"]),
        email=str(doc["email"]),
        display_name=str(doc.get("display_name", "")),
        roles=[_ROLE_TO_PB[Role(r)] for r in doc.get("roles", [])],
        disabled=bool(doc.get("disabled", False)),
        two_factor_enabled=bool(doc.get("totp")),
    )
    locked = aware(doc.get("locked_until"))
    if locked > now:
        msg.locked_until.CopyFrom(to_timestamp(locked))
    return msg


def account_fields(msg: auth_pb2.Account) -> AccountFields:
    return AccountFields(
        name=msg.name,
        company_name=msg.company_name,
        services=list(msg.services),
        managed_by_user_id=msg.managed_by_user_id,
        valid_from=from_timestamp(msg.valid_from) if msg.HasField("valid_from") else None,
        valid_until=from_timestamp(msg.valid_until) if msg.HasField("valid_until") else None,
        time_zone=msg.time_zone,
    )


def client_address(claimed: str, context: Ctx) -> str:
    """The address for the audit trail: the one the caller names (a portal front end
    passes its user's), else the connection's peer (``ipv4:10.0.0.5:51234``,
    ``ipv6:[::1]:51234``)."""
    if claimed:
        return claimed
    peer = str(context.peer() or "")
    family, _, rest = peer.partition(":")
    if family == "ipv4":
        return rest.rpartition(":")[0]
    if family == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return ""


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, app: App) -> None:
        self.uc = app.auth

    async def Login(self, request: auth_pb2.LoginRequest, context: Ctx) -> auth_pb2.LoginResponse:
        result = await self.uc.login(
            request.email, request.password, client_address(request.source_ip, context)
        )
        response = auth_pb2.LoginResponse(
            challenge_id=result.challenge_id,
            offer_two_factor_setup=result.offer_two_factor_setup,
        )
        if result.session is not None:
            response.session.CopyFrom(session_pb(result.session))
        if result.challenge_expires_at is not None:
            response.challenge_expires_at.CopyFrom(to_timestamp(result.challenge_expires_at))
        return response

    async def VerifySecondFactor(
        self, request: auth_pb2.VerifySecondFactorRequest, context: Ctx
    ) -> auth_pb2.VerifySecondFactorResponse:
        session, left = await self.uc.verify_second_factor(
            request.challenge_id,
            totp_code=request.totp_code,
            emergency_code=request.emergency_code,
            recovery_code=request.recovery_code,
            source_ip=client_address(request.source_ip, context),
        )
        return auth_pb2.VerifySecondFactorResponse(
            session=session_pb(session), recovery_codes_left=left
        )

    async def Refresh(
        self, request: auth_pb2.RefreshRequest, context: Ctx
    ) -> auth_pb2.RefreshResponse:
        session = await self.uc.refresh(request.refresh_token)
        return auth_pb2.RefreshResponse(session=session_pb(session))

    async def Logout(
        self, request: auth_pb2.LogoutRequest, context: Ctx
    ) -> auth_pb2.LogoutResponse:
        await self.uc.logout(current_principal())
        return auth_pb2.LogoutResponse()

    async def GetSigningKeys(
        self, request: auth_pb2.GetSigningKeysRequest, context: Ctx
    ) -> auth_pb2.GetSigningKeysResponse:
        keys = await self.uc.signing_keys()
        return auth_pb2.GetSigningKeysResponse(
            keys=[
                auth_pb2.SigningKey(
                    kid=k.kid,
                    public_key_pem=k.pem.decode(),
                    active=k.active,
                    created_at=to_timestamp(k.created_at),
                )
                for k in keys
            ]
        )

    async def SetTwoFactorPrompt(
        self, request: auth_pb2.SetTwoFactorPromptRequest, context: Ctx
    ) -> auth_pb2.SetTwoFactorPromptResponse:
        choice = _PROMPTS.get(request.choice)
        if choice is None:
            raise InvalidArgument("choice", "is required")
        await self.uc.set_two_factor_prompt(current_principal(), choice)
        return auth_pb2.SetTwoFactorPromptResponse()

    async def ChangePassword(
        self, request: auth_pb2.ChangePasswordRequest, context: Ctx
    ) -> auth_pb2.ChangePasswordResponse:
        await self.uc.change_password(
            current_principal(), request.current_password, request.new_password, request.totp_code
        )
        return auth_pb2.ChangePasswordResponse()

    async def RequestPasswordReset(
        self, request: auth_pb2.RequestPasswordResetRequest, context: Ctx
    ) -> auth_pb2.RequestPasswordResetResponse:
        await self.uc.request_password_reset(request.email)
        return auth_pb2.RequestPasswordResetResponse()

    async def ResetPassword(
        self, request: auth_pb2.ResetPasswordRequest, context: Ctx
    ) -> auth_pb2.ResetPasswordResponse:
        await self.uc.reset_password(request.token, request.new_password)
        return auth_pb2.ResetPasswordResponse()

    async def SendConfirmationEmail(
        self, request: auth_pb2.SendConfirmationEmailRequest, context: Ctx
    ) -> auth_pb2.SendConfirmationEmailResponse:
        expires = await self.uc.send_confirmation_email(current_principal())
        return auth_pb2.SendConfirmationEmailResponse(expires_at=to_timestamp(expires))

    async def ConfirmSetupCode(
        self, request: auth_pb2.ConfirmSetupCodeRequest, context: Ctx
    ) -> auth_pb2.ConfirmSetupCodeResponse:
        prov = await self.uc.confirm_setup_code(current_principal(), request.confirmation_code)
        return auth_pb2.ConfirmSetupCodeResponse(
            otpauth_uri=prov.uri, secret_base32=prov.secret, qr_png=prov.qr_png, qr_svg=prov.qr_svg
        )

    async def EnableTwoFactor(
        self, request: auth_pb2.EnableTwoFactorRequest, context: Ctx
    ) -> auth_pb2.EnableTwoFactorResponse:
        codes = await self.uc.enable_two_factor(current_principal(), request.totp_code)
        return auth_pb2.EnableTwoFactorResponse(recovery_codes=codes)

    async def ChangeDevice(
        self, request: auth_pb2.ChangeDeviceRequest, context: Ctx
    ) -> auth_pb2.ChangeDeviceResponse:
        await self.uc.change_device(current_principal(), request.totp_code)
        return auth_pb2.ChangeDeviceResponse()

    async def RequestEmergencyCode(
        self, request: auth_pb2.RequestEmergencyCodeRequest, context: Ctx
    ) -> auth_pb2.RequestEmergencyCodeResponse:
        expires = await self.uc.request_emergency_code(request.challenge_id)
        return auth_pb2.RequestEmergencyCodeResponse(expires_at=to_timestamp(expires))

    async def DisableTwoFactor(
        self, request: auth_pb2.DisableTwoFactorRequest, context: Ctx
    ) -> auth_pb2.DisableTwoFactorResponse:
        await self.uc.disable_two_factor(
            current_principal(), request.current_password, request.emergency_code
        )
        return auth_pb2.DisableTwoFactorResponse()

    async def RegenerateRecoveryCodes(
        self, request: auth_pb2.RegenerateRecoveryCodesRequest, context: Ctx
    ) -> auth_pb2.RegenerateRecoveryCodesResponse:
        codes = await self.uc.regenerate_recovery_codes(
            current_principal(), request.current_password
        )
        return auth_pb2.RegenerateRecoveryCodesResponse(recovery_codes=codes)


def security_event_pb(doc: Document) -> auth_pb2.SecurityEvent:
    msg = auth_pb2.SecurityEvent(
        event_id=str(doc["_id"]),
        kind=int(doc["kind"]),  # type: ignore[arg-type]
        user_id=str(doc.get("user_id", "")),
        email=str(doc.get("email", "")),
        source_ip=str(doc.get("source_ip", "")),
        detail=str(doc.get("detail", "")),
    )
    msg.occurred_at.CopyFrom(to_timestamp(aware(doc["occurred_at"])))
    return msg


class AccountServicer(auth_pb2_grpc.AccountServiceServicer):
    def __init__(self, app: App) -> None:
        self.uc = app.accounts
        self.security_events = app.security_events
        self.clock = app.ctx.clock

    async def CreateAccount(
        self, request: auth_pb2.CreateAccountRequest, context: Ctx
    ) -> auth_pb2.CreateAccountResponse:
        doc = await self.uc.create_account(current_principal(), account_fields(request.account))
        return auth_pb2.CreateAccountResponse(account=account_pb(doc))

    async def UpdateAccount(
        self, request: auth_pb2.UpdateAccountRequest, context: Ctx
    ) -> auth_pb2.UpdateAccountResponse:
        doc = await self.uc.update_account(
            current_principal(),
            request.account.account_id,
            account_fields(request.account),
            list(request.update_mask),
        )
        return auth_pb2.UpdateAccountResponse(account=account_pb(doc))

    async def DeleteAccount(
        self, request: auth_pb2.DeleteAccountRequest, context: Ctx
    ) -> auth_pb2.DeleteAccountResponse:
        await self.uc.delete_account(
            current_principal(), request.account_id, request.confirm_account_name
        )
        return auth_pb2.DeleteAccountResponse()

    async def GetAccount(
        self, request: auth_pb2.GetAccountRequest, context: Ctx
    ) -> auth_pb2.GetAccountResponse:
        doc = await self.uc.get_account(current_principal(), request.account_id)
        return auth_pb2.GetAccountResponse(account=account_pb(doc))

    async def ListAccounts(
        self, request: auth_pb2.ListAccountsRequest, context: Ctx
    ) -> auth_pb2.ListAccountsResponse:
        docs = await self.uc.list_accounts(current_principal())
        return auth_pb2.ListAccountsResponse(accounts=[account_pb(d) for d in docs])

    async def CreateUser(
        self, request: auth_pb2.CreateUserRequest, context: Ctx
    ) -> auth_pb2.CreateUserResponse:
        roles = []
        for r in request.roles:
            if r not in _PB_TO_ROLE:
                raise InvalidArgument("roles", "contains an unknown role")
            roles.append(_PB_TO_ROLE[r])
        doc = await self.uc.create_user(
            current_principal(), request.account_id, request.email, request.display_name, roles
        )
        return auth_pb2.CreateUserResponse(user=user_pb(doc, self.clock.now()))

    async def DisableUser(
        self, request: auth_pb2.DisableUserRequest, context: Ctx
    ) -> auth_pb2.DisableUserResponse:
        await self.uc.disable_user(current_principal(), request.user_id)
        return auth_pb2.DisableUserResponse()

    async def ListUsers(
        self, request: auth_pb2.ListUsersRequest, context: Ctx
    ) -> auth_pb2.ListUsersResponse:
        docs = await self.uc.list_users(current_principal(), request.account_id)
        now = self.clock.now()
        return auth_pb2.ListUsersResponse(users=[user_pb(d, now) for d in docs])

    async def UnlockUser(
        self, request: auth_pb2.UnlockUserRequest, context: Ctx
    ) -> auth_pb2.UnlockUserResponse:
        await self.uc.unlock_user(current_principal(), request.user_id)
        return auth_pb2.UnlockUserResponse()

    async def ListSecurityEvents(
        self, request: auth_pb2.ListSecurityEventsRequest, context: Ctx
    ) -> auth_pb2.ListSecurityEventsResponse:
        size = page_size(request.page_size, 50, 500)
        docs = await self.security_events.list(
            current_principal(),
            request.account_id,
            user_id=request.user_id,
            kinds=[int(k) for k in request.kinds],
            limit=size,
            after=decode_time_token(request.page_token),
        )
        token = next_page_token(docs, size, lambda d: (aware(d["occurred_at"]), str(d["_id"])))
        return auth_pb2.ListSecurityEventsResponse(
            events=[security_event_pb(d) for d in docs], next_page_token=token
        )


def service_names() -> list[str]:
    return [
        auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name,
        auth_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name,
    ]
