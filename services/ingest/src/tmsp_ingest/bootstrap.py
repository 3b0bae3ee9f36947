"""The one place that builds adapters and wires them to the use cases."""

from __future__ import annotations

import json
import secrets
from concurrent.futures import Executor
from dataclasses import dataclass

from pymongo.asynchronous.database import AsyncDatabase

from tmsp_common.auth_keys import grpc_key_source
from tmsp_common.clock import Clock, SystemClock
from tmsp_common.kafka.producer import EventProducer
from tmsp_common.mongo import Document
from tmsp_common.tokens import JwtVerifier, static_keys
from tmsp_ingest.adapters.crypto import Argon2Hasher, LocalCaIssuer
from tmsp_ingest.adapters.kafka_sink import KafkaPublisher
from tmsp_ingest.adapters.mongo_repos import (
    MongoAccounts,
    MongoLedger,
    MongoPatterns,
    MongoProducts,
    MongoTasks,
)
from tmsp_ingest.config import IngestSettings
from tmsp_ingest.domain.products import PasswordHasher
from tmsp_ingest.domain.throttle import FailureThrottle
from tmsp_ingest.service_layer.authenticate import ProductAuthenticator
from tmsp_ingest.service_layer.forensics import ForensicIntake, PatternCatalogue
from tmsp_ingest.service_layer.gateway import Bandwidth, Gateway
from tmsp_ingest.service_layer.intake import Intake
from tmsp_ingest.service_layer.registry import Registry
from tmsp_ingest.service_layer.status import StatusService


@dataclass
class Components:
    gateway: Gateway
    registry: Registry
    accounts: MongoAccounts
    tasks: MongoTasks
    publisher: KafkaPublisher
    patterns: PatternCatalogue


def verifier(settings: IngestSettings) -> JwtVerifier:
    """Bearer tokens verified with auth's public keys (from settings, else from auth)."""
    if settings.auth_public_keys.strip():
        raw = json.loads(settings.auth_public_keys)
        return JwtVerifier(static_keys({kid: pem.encode() for kid, pem in raw.items()}))
    return JwtVerifier(
        grpc_key_source(
            settings.auth_grpc_target, tls=settings.auth_grpc_tls, tls_dir=settings.tls_dir
        )
    )


def build(
    settings: IngestSettings,
    db: AsyncDatabase[Document],
    producer: EventProducer,
    *,
    clock: Clock | None = None,
    hasher: PasswordHasher | None = None,
    executor: Executor | None = None,
) -> Components:
    clock = clock or SystemClock()
    hasher = hasher or Argon2Hasher(
        time_cost=settings.argon2_time_cost, memory_cost=settings.argon2_memory_kib
    )
    products = MongoProducts(db)
    accounts = MongoAccounts(db)
    tasks = MongoTasks(db)
    publisher = KafkaPublisher(
        producer,
        executor=executor,
        ack_timeout=settings.ack_timeout_seconds,
        prefetch=max(1, settings.parse_workers),
    )
    authenticator = ProductAuthenticator(
        products,
        accounts,
        hasher,
        clock,
        FailureThrottle(settings.auth_failure_limit, settings.auth_failure_window_seconds),
        ttl=settings.credential_cache_seconds,
        dummy_hash=hasher.hash(secrets.token_urlsafe(18)),
    )
    intake = Intake(
        publisher,
        MongoLedger(db),
        clock,
        settings.max_upload_bytes,
        ack_timeout=settings.ack_timeout_seconds,
        max_buffered_bytes=settings.max_buffered_upload_bytes,
    )
    patterns = PatternCatalogue(MongoPatterns(db))
    gateway = Gateway(
        authenticator,
        intake,
        StatusService(publisher, tasks, clock),
        Bandwidth(),
        settings.max_upload_bytes,
        ForensicIntake(publisher, tasks, intake, clock, settings.max_forensic_bytes),
        patterns,
    )
    registry = Registry(
        products, accounts, publisher, hasher, LocalCaIssuer(settings.tls_dir), clock
    )
    return Components(gateway, registry, accounts, tasks, publisher, patterns)
