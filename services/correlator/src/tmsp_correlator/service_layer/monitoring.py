"""Use cases: nonconforming endpoints and product liveness."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tmsp.events.v1 import detections_pb2, incidents_pb2
from tmsp_common.kafka.envelope import to_timestamp
from tmsp_common.kafka.topics import NONCONFORMING_ENDPOINTS, PRODUCT_LIVENESS
from tmsp_common.logging import get_logger
from tmsp_correlator.domain import liveness as lv
from tmsp_correlator.domain.nonconforming import (
    REASON_FAILED,
    MitigationFact,
    apply_result,
    endpoint_key,
    reason,
)
from tmsp_correlator.service_layer.ports import (
    LivenessRepository,
    NonconformingRepository,
    Publisher,
)

log = get_logger(__name__)


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class NonconformingEndpoints:
    """Applies Threat Mitigator results; publishes an endpoint each time its view changes."""

    def __init__(self, repo: NonconformingRepository, publisher: Publisher) -> None:
        self.repo = repo
        self.publisher = publisher

    async def apply(self, fact: MitigationFact) -> bool:
        """Returns True when a change was published."""
        ep_key = endpoint_key(*fact.endpoint)
        if not ep_key or not fact.account_id:
            return False
        key = f"{fact.account_id}/{ep_key}"
        for _ in range(10):
            stored = await self.repo.get(key)
            version = int(stored.get("version", 0)) if stored else 0
            state, changed = apply_result(stored, fact)
            if not changed:
                return False
            state["version"] = version + 1
            if await self.repo.put(key, state, version):
                await self._publish(key, ep_key, state)
                return True
        raise RuntimeError(f"nonconforming endpoint {key}: too many concurrent updates")

    async def _publish(self, key: str, ep_key: str, st: dict[str, Any]) -> None:
        host, ip, mac = st["endpoint"]
        msg = incidents_pb2.NonconformingEndpoint(
            account_id=st["account_id"],
            endpoint_key=ep_key,
            endpoint=detections_pb2.Endpoint(host=host, ip=ip, mac=mac),
            threat_names=sorted(st["threats"]),
            cleared=st["cleared"],
            product_id=st["product_id"],
            reason=(
                incidents_pb2.NONCONFORMING_REASON_UNSPECIFIED
                if st["cleared"]
                else incidents_pb2.NONCONFORMING_REASON_MITIGATION_FAILED
                if reason(st) == REASON_FAILED
                else incidents_pb2.NONCONFORMING_REASON_UNRESOLVED_THREAT
            ),
        )
        if st["since"] is not None:
            msg.since.CopyFrom(to_timestamp(_dt(st["since"])))
        msg.updated_at.CopyFrom(to_timestamp(_dt(st["updated"])))
        await self.publisher.publish(
            NONCONFORMING_ENDPOINTS, msg, key=key, account_id=st["account_id"]
        )
        log.info("nonconforming endpoint", key=key, cleared=st["cleared"])


_STATE = {
    lv.ONLINE: incidents_pb2.PRODUCT_LIVENESS_STATE_ONLINE,
    lv.OFFLINE: incidents_pb2.PRODUCT_LIVENESS_STATE_OFFLINE,
    lv.LOGS_NOT_RECEIVED: incidents_pb2.PRODUCT_LIVENESS_STATE_LOGS_NOT_RECEIVED,
    lv.LOGS_RESUMED: incidents_pb2.PRODUCT_LIVENESS_STATE_LOGS_RESUMED,
}


class ProductLiveness:
    """Heartbeats/uploads move products online; the periodic check moves them offline."""

    def __init__(
        self, repo: LivenessRepository, publisher: Publisher, policy: lv.LivenessPolicy
    ) -> None:
        self.repo = repo
        self.publisher = publisher
        self.policy = policy

    async def heartbeat(
        self,
        product_id: str,
        account_id: str,
        at: float,
        interval_s: float | None,
        compliance: bool | None = None,
    ) -> None:
        before = await self.repo.heartbeat(product_id, account_id, at, interval_s, compliance)
        prior = (before or {}).get("state") or "unknown"
        if prior != lv.ONLINE and await self.repo.mark(
            product_id,
            {"state": None if before is None else before.get("state")},
            {"state": lv.ONLINE, "since": at},
        ):
            await self._publish(product_id, lv.ONLINE, at)

    async def upload(self, product_id: str, account_id: str, at: float) -> None:
        before = await self.repo.upload(product_id, account_id, at)
        if (
            before
            and before.get("logs_missing")
            and await self.repo.mark(product_id, {"logs_missing": True}, {"logs_missing": False})
        ):
            await self._publish(product_id, lv.LOGS_RESUMED, at)

    async def product(
        self,
        product_id: str,
        account_id: str,
        heartbeat_interval_s: float,
        upload_frequency_s: float,
        deregistered: bool,
    ) -> None:
        await self.repo.product(
            product_id, account_id, heartbeat_interval_s, upload_frequency_s, deregistered
        )

    async def check(self, now: float) -> int:
        """The periodic check; returns how many transitions it published."""
        published = 0
        for doc in await self.repo.scan():
            for change in lv.due_transitions(doc, now, self.policy):
                if change == lv.OFFLINE:
                    ok = await self.repo.mark(
                        doc["_id"],
                        {"state": doc.get("state"), "last_heartbeat_at": doc["last_heartbeat_at"]},
                        {"state": lv.OFFLINE, "since": now},
                    )
                else:
                    ok = await self.repo.mark(
                        doc["_id"],
                        {
                            "logs_missing": doc.get("logs_missing"),
                            "last_upload_at": doc["last_upload_at"],
                        },
                        {"logs_missing": True},
                    )
                if ok:
                    await self._publish(doc["_id"], change, now)
                    published += 1
        return published

    async def _publish(self, product_id: str, state: str, at: float) -> None:
        doc = await self.repo.get(product_id) or {}
        msg = incidents_pb2.ProductLiveness(
            product_id=product_id, account_id=doc.get("account_id", ""), state=_STATE[state]
        )
        msg.since.CopyFrom(to_timestamp(_dt(at)))
        if doc.get("last_heartbeat_at") is not None:
            msg.last_heartbeat_at.CopyFrom(to_timestamp(_dt(doc["last_heartbeat_at"])))
        if doc.get("last_upload_at") is not None:
            msg.last_upload_at.CopyFrom(to_timestamp(_dt(doc["last_upload_at"])))
        if doc.get("compliance") is not None:
            msg.security_compliance_enabled = bool(doc["compliance"])
        await self.publisher.publish(
            PRODUCT_LIVENESS, msg, key=product_id, account_id=msg.account_id
        )
        log.info("product liveness", product_id=product_id, state=state)
