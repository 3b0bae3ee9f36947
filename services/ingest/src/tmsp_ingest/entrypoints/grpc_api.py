"""The admin gRPC API: proto to command, use case, result to proto."""

from __future__ import annotations

from typing import Any

import grpc

from tmsp.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from tmsp_common.authn import current_principal
from tmsp_ingest.adapters.kafka_sink import snapshot
from tmsp_ingest.domain.products import (
    DEFAULT_HEARTBEAT_INTERVAL,
    ProductUpdate,
    Registration,
    State,
)
from tmsp_ingest.service_layer.registry import IssuedCredentials, Registry

Context = grpc.aio.ServicerContext[Any, Any]


def _credentials(issued: IssuedCredentials) -> ingest_pb2.ServerCredentials:
    return ingest_pb2.ServerCredentials(
        user_name=issued.user_name,
        password=issued.password,
        client_certificate_pem=issued.client_certificate_pem,
        client_private_key_pem=issued.client_private_key_pem,
        ca_certificate_pem=issued.ca_certificate_pem,
    )


class ProductRegistryServicer(ingest_pb2_grpc.ProductRegistryServiceServicer):
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def RegisterProduct(  # noqa: N802 - gRPC method name
        self, request: ingest_pb2.RegisterProductRequest, context: Context
    ) -> ingest_pb2.RegisterProductResponse:
        reg = Registration(
            account_id=request.account_id,
            kind=request.kind,
            name=request.name,
            protocol=request.protocol,
            upload_frequency_seconds=request.upload_frequency_seconds,
            registration_email=request.registration_email,
            upload_bandwidth=request.upload_bandwidth_bytes_per_second,
            download_bandwidth=request.download_bandwidth_bytes_per_second,
            ssh_public_key=request.ssh_public_key,
            heartbeat_interval_seconds=request.heartbeat_interval_seconds
            or DEFAULT_HEARTBEAT_INTERVAL,
            request_id=request.request_id,
        )
        product, issued = await self.registry.register(current_principal(), reg)
        return ingest_pb2.RegisterProductResponse(
            product=snapshot(product), credentials=_credentials(issued)
        )

    async def RotateProductCredentials(  # noqa: N802
        self,
        request: ingest_pb2.RotateProductCredentialsRequest,
        context: Context,
    ) -> ingest_pb2.RotateProductCredentialsResponse:
        key = request.ssh_public_key if request.HasField("ssh_public_key") else None
        product, issued = await self.registry.rotate_credentials(
            current_principal(), request.product_id, key
        )
        return ingest_pb2.RotateProductCredentialsResponse(
            product=snapshot(product), credentials=_credentials(issued)
        )

    async def UpdateProduct(  # noqa: N802
        self, request: ingest_pb2.UpdateProductRequest, context: Context
    ) -> ingest_pb2.UpdateProductResponse:
        r = request
        heartbeat = (
            r.heartbeat_interval_seconds if r.HasField("heartbeat_interval_seconds") else None
        )
        update = ProductUpdate(
            name=r.name if r.HasField("name") else None,
            upload_frequency_seconds=(
                r.upload_frequency_seconds if r.HasField("upload_frequency_seconds") else None
            ),
            upload_bandwidth=(
                r.upload_bandwidth_bytes_per_second
                if r.HasField("upload_bandwidth_bytes_per_second")
                else None
            ),
            download_bandwidth=(
                r.download_bandwidth_bytes_per_second
                if r.HasField("download_bandwidth_bytes_per_second")
                else None
            ),
            heartbeat_interval_seconds=DEFAULT_HEARTBEAT_INTERVAL if heartbeat == 0 else heartbeat,
        )
        product = await self.registry.update(
            current_principal(), request.product_id, update, request.expected_version
        )
        return ingest_pb2.UpdateProductResponse(product=snapshot(product))

    async def DisableProduct(  # noqa: N802
        self, request: ingest_pb2.DisableProductRequest, context: Context
    ) -> ingest_pb2.DisableProductResponse:
        product = await self.registry.set_state(
            current_principal(), request.product_id, State.DISABLED
        )
        return ingest_pb2.DisableProductResponse(product=snapshot(product))

    async def EnableProduct(  # noqa: N802
        self, request: ingest_pb2.EnableProductRequest, context: Context
    ) -> ingest_pb2.EnableProductResponse:
        product = await self.registry.set_state(
            current_principal(), request.product_id, State.ACTIVE
        )
        return ingest_pb2.EnableProductResponse(product=snapshot(product))

    async def DeregisterProduct(  # noqa: N802
        self, request: ingest_pb2.DeregisterProductRequest, context: Context
    ) -> ingest_pb2.DeregisterProductResponse:
        product = await self.registry.set_state(
            current_principal(), request.product_id, State.DEREGISTERED
        )
        return ingest_pb2.DeregisterProductResponse(product=snapshot(product))

    async def GetProduct(  # noqa: N802
        self, request: ingest_pb2.GetProductRequest, context: Context
    ) -> ingest_pb2.GetProductResponse:
        product = await self.registry.get(current_principal(), request.product_id)
        return ingest_pb2.GetProductResponse(product=snapshot(product))

    async def ListProducts(  # noqa: N802
        self, request: ingest_pb2.ListProductsRequest, context: Context
    ) -> ingest_pb2.ListProductsResponse:
        products = await self.registry.list(current_principal(), request.account_id)
        return ingest_pb2.ListProductsResponse(products=[snapshot(p) for p in products])
