"""gRPC server bootstrap: health, reflection, TLS, error mapping, auth, graceful drain.

Servicers stay thin: they translate proto to a command, call a use case and translate the
result back. Domain errors become status codes in exactly one place, the
:class:`ErrorMappingInterceptor`; authentication and tenant scoping happen in the
:class:`AuthInterceptor`, not in each method.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tmsp_common import errors
from tmsp_common.authn import (
    Principal,
    TokenVerifier,
    current_principal,
    reset_principal,
    set_principal,
)
from tmsp_common.logging import bind_context, get_logger
from tmsp_common.metrics import GRPC_REQUESTS, GRPC_SECONDS
from tmsp_common.tls import ensure_server_certificate

log = get_logger(__name__)

_STATUS: list[tuple[type[errors.DomainError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
]


def status_for(exc: errors.DomainError) -> grpc.StatusCode:
    """The status code of a domain error (the one mapping of the whole system)."""
    for cls, code in _STATUS:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.UNKNOWN


def _trailers(exc: errors.DomainError) -> tuple[tuple[str, str], ...]:
    if isinstance(exc, errors.RateLimited) and exc.retry_after_seconds is not None:
        return (("retry-after", str(int(exc.retry_after_seconds + 0.999))),)
    if isinstance(exc, errors.InvalidArgument):
        return (("field", exc.field),)
    return ()


if TYPE_CHECKING:  # the stubs are generic, the runtime classes are not
    Context = grpc.aio.ServicerContext[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Context = grpc.aio.ServicerContext
    Handler = grpc.RpcMethodHandler
Behavior = Callable[[Any, Context], Awaitable[Any]]
StreamBehavior = Callable[[Any, Context], AsyncIterator[Any]]
Before = Callable[[Any, Context], Awaitable[Any]]
Authorizer = Callable[[str, Any, Principal], None]
"""``authorize(method, request, principal)``: raise a domain error to refuse the call.

Runs in the interceptor right after the token is verified, before the method; it may
normalise the request (e.g. fill in the caller's own account id) so that tenant scoping
lives in one place."""


@contextlib.asynccontextmanager
async def _rpc_scope(
    method: str, request: Any, context: Context, before: Before
) -> AsyncIterator[None]:
    """Authenticate, then map what the method raises to a status (one place for both the
    unary and the server-streaming wrappers); metrics and the principal reset at the end."""
    started = time.perf_counter()
    code = grpc.StatusCode.OK
    token = None
    try:
        token = await before(request, context)
        yield
    except errors.DomainError as exc:
        code = status_for(exc)
        await context.abort(code, exc.message, trailing_metadata=_trailers(exc))
    except asyncio.CancelledError:
        code = grpc.StatusCode.CANCELLED
        raise
    except Exception as exc:
        if isinstance(exc, grpc.aio.AbortError):
            code = grpc.StatusCode.ABORTED
            raise
        code = grpc.StatusCode.INTERNAL
        log.exception("unhandled error in gRPC method", method=method)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error")
    finally:
        if token is not None:
            reset_principal(token)
        GRPC_REQUESTS.labels(method, code.name).inc()
        GRPC_SECONDS.labels(method).observe(time.perf_counter() - started)


def _wrap_unary(method: str, behavior: Behavior, before: Before) -> Behavior:
    async def wrapper(request: Any, context: Context) -> Any:
        async with _rpc_scope(method, request, context, before):
            return await behavior(request, context)
        return None  # not reached: the scope aborted the call

    return wrapper


def _wrap_stream(method: str, behavior: StreamBehavior, before: Before) -> StreamBehavior:
    async def wrapper(request: Any, context: Context) -> AsyncIterator[Any]:
        async with _rpc_scope(method, request, context, before):
            async for item in behavior(request, context):
                yield item

    return wrapper


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Maps domain errors to status codes and, when a verifier is set, authenticates.

    Methods listed in ``public_methods`` (full names, ``/pkg.Service/Method``) and the health
    and reflection services need no token; every other call needs ``authorization: Bearer``.
    """

    def __init__(
        self,
        verifier: TokenVerifier | None = None,
        public_methods: Iterable[str] = (),
        authorize: Authorizer | None = None,
    ) -> None:
        self._verifier = verifier
        self._public = set(public_methods)
        self._authorize = authorize

    def _is_public(self, method: str) -> bool:
        return (
            self._verifier is None
            or method in self._public
            or method.startswith("/grpc.health.")
            or method.startswith("/grpc.reflection.")
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        if handler is None or (handler.unary_unary is None and handler.unary_stream is None):
            return handler
        method = details.method
        public = self._is_public(method)
        verifier = self._verifier
        authorize = self._authorize

        async def before(request: Any, context: Context) -> Any:
            metadata = dict(context.invocation_metadata() or ())
            trace = metadata.get("x-trace-id")
            if trace:
                bind_context(trace_id=str(trace))
            if public or verifier is None:
                return None
            auth = str(metadata.get("authorization", ""))
            if not auth.lower().startswith("bearer "):
                raise errors.Unauthenticated("missing bearer token")
            principal = await verifier.verify(auth[7:].strip())
            bind_context(account_id=principal.account_id, user_id=principal.user_id)
            token = set_principal(principal)
            if authorize is not None:
                try:
                    authorize(method, request, current_principal())
                except BaseException:
                    reset_principal(token)
                    raise
            return token

        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(method, cast(StreamBehavior, handler.unary_stream), before),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary(method, cast(Behavior, handler.unary_unary), before),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


@dataclass
class GrpcConfig:
    host: str = "0.0.0.0"  # noqa: S104 - containers listen on all interfaces
    port: int = 50051
    tls: bool = True
    tls_dir: str = ".local/tls"
    cert_name: str = "grpc-server"
    drain_seconds: float = 1.0
    grace_seconds: float = 10.0


Registrar = Callable[[grpc.aio.Server], None]


class GrpcServer:
    """A ``grpc.aio`` server with the standard health service and reflection."""

    def __init__(
        self,
        config: GrpcConfig,
        registrars: Sequence[Registrar],
        service_names: Sequence[str],
        *,
        verifier: TokenVerifier | None = None,
        public_methods: Iterable[str] = (),
        options: Sequence[tuple[str, Any]] = (),
        authorize: Authorizer | None = None,
    ) -> None:
        self.config = config
        self.server = grpc.aio.server(
            interceptors=[ServiceInterceptor(verifier, public_methods, authorize)],
            options=list(options),
        )
        for register in registrars:
            register(self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._names = list(service_names)
        reflection.enable_server_reflection(
            [*self._names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self.port = 0

    async def start(self) -> int:
        """Bind and start; returns the bound port (useful when the config says 0)."""
        address = f"{self.config.host}:{self.config.port}"
        if self.config.tls:
            paths = ensure_server_certificate(self.config.tls_dir, self.config.cert_name)
            cert, key, _ca = paths.read()
            creds = grpc.ssl_server_credentials([(key, cert)])
            self.port = self.server.add_secure_port(address, creds)
        else:
            self.port = self.server.add_insecure_port(address)
        await self.server.start()
        for name in ["", *self._names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("gRPC listening", port=self.port, tls=self.config.tls)
        return self.port

    async def drain(self) -> None:
        """NOT_SERVING first (so probes and balancers move away), then stop gracefully."""
        await self.health.enter_graceful_shutdown()
        await asyncio.sleep(self.config.drain_seconds)
        await self.server.stop(self.config.grace_seconds)

    async def serve_until(self, stop: asyncio.Event) -> None:
        await self.start()
        await stop.wait()
        await self.drain()
