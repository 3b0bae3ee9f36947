"""Product registration use cases, called by the admin gRPC API.

Provider operators register, rotate, disable, enable and deregister products; account
administrators (and analysts) list and read their own account's products. Every change is
stored, then published as a snapshot to the compacted products topic. When the publication
fails after the store, the caller gets Unavailable and retries: a retried state change finds
the state already stored and publishes it again; a retried rotation rotates again (new
version, published); a retried registration with the same ``request_id`` finds the product
the first attempt stored and issues it fresh credentials (the first ones never reached the
caller), so a retry never registers a second product.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tmsp_common.authn import Principal, Role
from tmsp_common.clock import Clock
from tmsp_common.errors import FailedPrecondition, NotFound
from tmsp_ingest.domain.products import (
    PasswordHasher,
    Product,
    ProductUpdate,
    Registration,
    State,
    check_account,
    check_registration_email,
    new_password,
    new_product_id,
    new_user_name,
    validate,
)
from tmsp_ingest.service_layer.ports import (
    AccountRepository,
    CertificateIssuer,
    ProductExists,
    ProductPublisher,
    ProductRepository,
    VersionConflict,
)


@dataclass(frozen=True)
class IssuedCredentials:
    """Shown to the operator once; only hashes are kept."""

    user_name: str
    password: str
    client_certificate_pem: bytes
    client_private_key_pem: bytes
    ca_certificate_pem: bytes


class Registry:
    def __init__(
        self,
        products: ProductRepository,
        accounts: AccountRepository,
        publisher: ProductPublisher,
        hasher: PasswordHasher,
        certificates: CertificateIssuer,
        clock: Clock,
    ) -> None:
        self.products = products
        self.accounts = accounts
        self.publisher = publisher
        self.hasher = hasher
        self.certificates = certificates
        self.clock = clock

    def _now(self) -> datetime:
        return self.clock.now()

    async def register(
        self, caller: Principal, reg: Registration
    ) -> tuple[Product, IssuedCredentials]:
        caller.require_role(Role.PROVIDER_OPERATOR)
        validate(reg)
        now = self._now()
        account = check_account(await self.accounts.get(reg.account_id), now)
        recorded = {
            p.registration_email for p in await self.products.list_for_account(account.account_id)
        }
        check_registration_email(reg.registration_email, account, recorded)
        product_id = new_product_id(account.account_id, reg.request_id)
        if reg.request_id:
            stored = await self.products.get(product_id)
            if stored is not None:
                return await self._registered_again(stored, reg)
        password = new_password()
        cert, key, ca, fingerprint = self.certificates.issue(product_id)
        product = Product(
            product_id=product_id,
            **reg.product_fields(),  # type: ignore[arg-type]  # typed per field in Product
            state=State.ACTIVE,
            user_name=new_user_name(),
            password_hash=self.hasher.hash(password),
            registered_at=now,
            updated_at=now,
            ssh_public_keys=(reg.ssh_public_key.strip(),) if reg.ssh_public_key else (),
            client_cert_sha256=fingerprint,
        )
        try:
            await self.products.add(product)
        except ProductExists:
            stored = await self.products.get(product_id)
            if stored is None or not reg.request_id:
                raise
            return await self._registered_again(stored, reg)  # a concurrent retry won
        await self.publisher.product_changed(product)
        return product, IssuedCredentials(product.user_name, password, cert, key, ca)

    async def _registered_again(
        self, product: Product, reg: Registration
    ) -> tuple[Product, IssuedCredentials]:
        """A retried registration: the same product, with fresh credentials, published."""
        if not reg.describes(product):
            raise FailedPrecondition("request_id was used for a different registration")
        if product.state is State.DEREGISTERED:
            raise FailedPrecondition("product deregistered")
        return await self._reissue(product, product.ssh_public_keys)

    async def _load(self, caller: Principal, product_id: str) -> Product:
        product = await self.products.get(product_id)
        if product is None:
            raise NotFound("product not found")
        caller.require_account(product.account_id)
        return product

    async def _save(self, before: Product, after: Product) -> Product:
        try:
            await self.products.update(after, before.version)
        except VersionConflict:
            raise FailedPrecondition("product changed concurrently; retry") from None
        await self.publisher.product_changed(after)
        return after

    async def rotate_credentials(
        self, caller: Principal, product_id: str, ssh_public_key: str | None = None
    ) -> tuple[Product, IssuedCredentials]:
        """New password and client certificate (the old ones stop working at once)."""
        caller.require_role(Role.PROVIDER_OPERATOR)
        product = await self._load(caller, product_id)
        if product.state is State.DEREGISTERED:
            raise FailedPrecondition("product deregistered")
        keys = product.ssh_public_keys
        if ssh_public_key is not None:
            keys = (ssh_public_key.strip(),) if ssh_public_key.strip() else ()
        return await self._reissue(product, keys)

    async def _reissue(
        self, product: Product, keys: tuple[str, ...]
    ) -> tuple[Product, IssuedCredentials]:
        password = new_password()
        cert, key, ca, fingerprint = self.certificates.issue(product.product_id)
        updated = product.changed(
            self._now(),
            password_hash=self.hasher.hash(password),
            client_cert_sha256=fingerprint,
            ssh_public_keys=keys,
            credentials_version=product.credentials_version + 1,
        )
        await self._save(product, updated)
        return updated, IssuedCredentials(product.user_name, password, cert, key, ca)

    async def update(
        self, caller: Principal, product_id: str, update: ProductUpdate, expected_version: int = 0
    ) -> Product:
        """Change a product's settings in place (credentials unchanged), next version
        published. Nothing to change (also a retry after a failed publication) publishes the
        stored snapshot again."""
        caller.require_role(Role.PROVIDER_OPERATOR)
        product = await self._load(caller, product_id)
        if product.state is State.DEREGISTERED:
            raise FailedPrecondition("product deregistered")
        if expected_version and product.version != expected_version:
            raise FailedPrecondition(
                f"product is at version {product.version}, not {expected_version}; read it again"
            )
        changes = update.changes(product)
        if not changes:
            await self.publisher.product_changed(product)
            return product
        return await self._save(product, product.changed(self._now(), **changes))

    async def set_state(self, caller: Principal, product_id: str, state: State) -> Product:
        caller.require_role(Role.PROVIDER_OPERATOR)
        product = await self._load(caller, product_id)
        if product.state is state:
            # Maybe a retry after the publication failed (the stored change stays): publish
            # the snapshot again; its event id is product:version, so consumers dedupe it.
            await self.publisher.product_changed(product)
            return product
        if product.state is State.DEREGISTERED:
            raise FailedPrecondition("product deregistered")
        return await self._save(product, product.changed(self._now(), state=state))

    async def get(self, caller: Principal, product_id: str) -> Product:
        caller.require_role(Role.ACCOUNT_ADMINISTRATOR, Role.ANALYST)
        return await self._load(caller, product_id)

    async def list(self, caller: Principal, account_id: str) -> list[Product]:
        caller.require_role(Role.ACCOUNT_ADMINISTRATOR, Role.ANALYST)
        caller.require_account(account_id)
        return await self.products.list_for_account(account_id)
