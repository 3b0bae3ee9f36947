"""The notifier as deployed: a subprocess consuming real Kafka, storing in the real
Mongo-wire server and mailing a real SMTP server on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from tmsp.events.v1 import accounts_pb2, notifications_pb2
from tmsp_common.kafka.consumer import DLQ_REASON
from tmsp_common.kafka.producer import EventProducer
from tmsp_common.kafka.topics import ACCOUNTS, NOTIFICATION_REQUESTS
from tmsp_common.testing import Infra, ServiceProcess, TopicReader, free_port, wait_until
from tmsp_notifier.testing import RecordingSmtpServer, notifier_env

pytestmark = [
    pytest.mark.integration,
    pytest.mark.kafka,
    pytest.mark.mongo,
    pytest.mark.smtp,
    pytest.mark.slow,
]

CODE_PREFIX = "93"


@pytest.fixture
def smtp() -> Iterator[RecordingSmtpServer]:
    with RecordingSmtpServer(free_port()) as server:
        yield server


@pytest.fixture
def env(infra: Infra, names: Any, smtp: RecordingSmtpServer, tmp_path: Path) -> dict[str, str]:
    return notifier_env(
        infra_env=infra.env(),
        prefix=names.prefix,
        database=names.database("notifier"),
        smtp_port=smtp.port,
        grpc_port=free_port(),
        tls_dir=str(tmp_path / "tls"),
        delivery_concurrency="4",
    )


@pytest.fixture
async def producer(infra: Infra, names: Any) -> AsyncIterator[EventProducer]:
    async with EventProducer(infra.kafka_bootstrap, service="test", topic_prefix=names.prefix) as p:
        yield p


@pytest.fixture
async def deliveries(infra: Infra, names: Any) -> AsyncIterator[Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(infra.mongo_url)
    yield client[names.database("notifier")]["deliveries"]
    await client.close()


def start(env: dict[str, str]) -> ServiceProcess:
    proc = ServiceProcess("tmsp_notifier", env).start()
    proc.wait_for_log("service ready", timeout=60)
    return proc


def code_request(nid: str, code: str, to: str = "user@acme.example") -> Any:
    return notifications_pb2.NotificationRequest(
        notification_id=nid,
        kind=notifications_pb2.NOTIFICATION_KIND_CONFIRMATION_CODE,
        account_id="acct-1",
        recipients=[to],
        params={"code": code, "user_name": "Ada"},
    )


async def publish_all(producer: EventProducer, requests: list[Any]) -> None:
    futures = [
        await producer.send(NOTIFICATION_REQUESTS, r, key=r.notification_id, account_id="acct-1")
        for r in requests
    ]
    await asyncio.gather(*futures)


async def test_requests_mailed_once_with_headers_and_parts(
    env: dict[str, str], smtp: RecordingSmtpServer, producer: EventProducer, deliveries: Any
) -> None:
    proc = start(env)
    try:
        reqs = [code_request(f"c-{i}", f"{CODE_PREFIX}{i:04d}") for i in range(5)]
        await publish_all(producer, reqs)
        await publish_all(producer, reqs[:2])  # producer retried: same ids again
        await wait_until(lambda: len(smtp.messages) >= 5, timeout=30)
        await asyncio.sleep(1.0)
        assert smtp.message_ids() == {f"<c-{i}@tmsp.notifier>": 1 for i in range(5)}
        msg = smtp.by_message_id("<c-3@tmsp.notifier>")[0]
        assert msg["To"] == "user@acme.example"
        assert msg["From"] == "TMSP Notifications <notifications@tmsp.local>"
        assert msg["Subject"] == "Your TMSP confirmation code"
        text, html = msg.get_body(("plain",)), msg.get_body(("html",))
        assert text is not None and html is not None
        assert f"{CODE_PREFIX}0003" in text.get_content()
        assert f"{CODE_PREFIX}0003" in html.get_content()
        doc = await deliveries.find_one({"_id": "c-3"})
        assert doc["state"] == "sent" and doc["attempts"] == 1
        assert doc["last_reply"].startswith("250")
        assert f"{CODE_PREFIX}0003" not in str(doc)
        assert proc.alive()
    finally:
        exit_code = proc.terminate()
    assert exit_code == 0  # SIGTERM: drained and stopped cleanly
    assert "stopped" in proc.logs
    assert f"{CODE_PREFIX}000" not in proc.logged_content  # codes are never logged


async def test_smtp_down_then_4xx_then_up_delivered_once(
    env: dict[str, str], smtp: RecordingSmtpServer, producer: EventProducer, deliveries: Any
) -> None:
    proc = start(env)
    try:
        smtp.stop()
        await publish_all(producer, [code_request("down-1", "111111")])
        await wait_until(
            lambda: deliveries.find_one({"_id": "down-1", "state": "retrying"}), timeout=30
        )
        smtp.answer_next("451 4.3.0 try later")
        smtp.start()
        await wait_until(lambda: deliveries.find_one({"_id": "down-1", "state": "sent"}), 30)
        doc = await deliveries.find_one({"_id": "down-1"})
        assert doc["attempts"] >= 3  # refused connection(s), the 451, then accepted
        assert smtp.handler.refused == 1
        assert smtp.message_ids() == {"<down-1@tmsp.notifier>": 1}
    finally:
        proc.terminate()


async def test_5xx_failed_and_dead_lettered_on_kafka(
    env: dict[str, str],
    smtp: RecordingSmtpServer,
    producer: EventProducer,
    deliveries: Any,
    infra: Infra,
    names: Any,
) -> None:
    proc = start(env)
    try:
        smtp.answer_next("550 5.1.1 no such user")
        await publish_all(producer, [code_request("bad-1", "777123")])
        await publish_all(
            producer, [code_request("inj-1", "777124", to="a@acme.example\r\nBcc: x@evil.example")]
        )
        dlq = NOTIFICATION_REQUESTS.dead_letter
        assert dlq is not None
        async with TopicReader(infra.kafka_bootstrap, dlq, names.prefix) as reader:
            records = await reader.read_until(lambda rs: len(rs) >= 2, timeout=30)
        reasons = {r.key.decode(): dict(r.headers)[DLQ_REASON].decode() for r in records}
        assert reasons["bad-1"].startswith("smtp: 550")
        assert reasons["inj-1"].startswith("invalid: recipients")
        for r in records:
            assert b"777123" not in r.value and b"777124" not in r.value
        doc = await deliveries.find_one({"_id": "bad-1"})
        assert doc["state"] == "failed" and "550" in doc["last_reply"]
        # a rejection is dead-lettered before it is recorded (a crash between the two
        # dead-letters it again on replay rather than losing it): wait for the record
        rejected = await wait_until(lambda: deliveries.find_one({"_id": "inj-1"}), timeout=10)
        assert rejected["state"] == "rejected"
        assert smtp.messages == []
    finally:
        proc.terminate()


async def test_killed_mid_batch_then_restarted_none_lost_duplicates_only_in_window(
    env: dict[str, str], smtp: RecordingSmtpServer, producer: EventProducer, deliveries: Any
) -> None:
    total = 60
    # The server records each mail at once but answers 250 only after a second, so the kill
    # lands inside the window SMTP cannot close: accepted, but the notifier never heard it.
    smtp.set_reply_delay(1.0)
    proc = start(env)
    ids = [f"k-{uuid.uuid4().hex[:8]}-{i}" for i in range(total)]
    try:
        await publish_all(producer, [code_request(n, "555000") for n in ids])
        await wait_until(lambda: len(smtp.messages) >= 4, timeout=30)
        proc.kill()  # SIGKILL while the batch is in flight
        in_window = {d["_id"] async for d in deliveries.find({"state": "sending"})}
        accepted_unrecorded = {
            str(m["Message-ID"])[1:].split("@")[0] for m in smtp.messages
        } & in_window
        before = len(smtp.messages)
        assert before < total, "the batch finished before the kill; nothing was tested"
        assert accepted_unrecorded, "no mail was inside the window at the kill"
        smtp.set_reply_delay(0.0)
        proc = start(env)
        await wait_until(lambda: len(set(smtp.message_ids())) >= total, timeout=60)
        await asyncio.sleep(1.0)
        counts = smtp.message_ids()
        assert set(counts) == {f"<{n}@tmsp.notifier>" for n in ids}  # none lost
        duplicated = {mid[1:].split("@")[0] for mid, c in counts.items() if c > 1}
        assert all(c <= 2 for c in counts.values())
        # Only the documented window (accepted by the server, result not yet recorded) can
        # repeat, such a repeat carries the same Message-ID (recognisable), and every mail
        # of that window was indeed sent again rather than lost.
        assert duplicated <= in_window
        assert accepted_unrecorded <= duplicated
        states = {d["state"] async for d in deliveries.find({"_id": {"$in": ids}})}
        assert states == {"sent"}
    finally:
        proc.terminate()


async def test_report_ready_with_pdf_attached_and_oversized_attachment_refused(
    env: dict[str, str],
    smtp: RecordingSmtpServer,
    producer: EventProducer,
    deliveries: Any,
) -> None:
    env = {**env, "TMSP_NOTIFIER_MAX_ATTACHMENT_BYTES": "50000"}
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 100  # 25.6 kB
    report = notifications_pb2.NotificationRequest(
        notification_id="rep-1",
        kind=notifications_pb2.NOTIFICATION_KIND_REPORT_READY,
        account_id="acct-1",
        recipients=["admin@acme.example"],
        params={"report_name": "Weekly threat report", "attached": "yes"},
        attachments=[
            notifications_pb2.Attachment(
                filename="weekly.pdf", content_type="application/pdf", content=pdf
            )
        ],
    )
    too_big = notifications_pb2.NotificationRequest()
    too_big.CopyFrom(report)
    too_big.notification_id = "rep-2"
    too_big.attachments[0].content = pdf * 2
    proc = start(env)
    try:
        await publish_all(producer, [report, too_big])
        await wait_until(lambda: deliveries.find_one({"_id": "rep-2", "state": "rejected"}), 30)
        await wait_until(lambda: deliveries.find_one({"_id": "rep-1", "state": "sent"}), 30)
        (msg,) = smtp.messages
        assert msg["Subject"] == "Report ready: Weekly threat report"
        (attachment,) = list(msg.iter_attachments())
        assert attachment.get_filename() == "weekly.pdf"
        assert attachment.get_content_type() == "application/pdf"
        assert attachment.get_content() == pdf
        assert msg.get_body(("plain",)) is not None and msg.get_body(("html",)) is not None
        rejected = await deliveries.find_one({"_id": "rep-2"})
        assert f"{2 * len(pdf)} bytes attached, at most 50000" in rejected["last_reply"]
    finally:
        proc.terminate()


AT = "2026-01-15T12:00:00+00:00"
K = notifications_pb2.NotificationKind
# What auth publishes for each of its kinds (tmsp_auth.service_layer.auth), ids included:
# auth's lockout id holds colons, which a Message-ID may not, so its Message-ID is hashed.
AUTH_REQUESTS: list[tuple[str, int, dict[str, str], str]] = [
    ("a-conf", K.NOTIFICATION_KIND_CONFIRMATION_CODE, {"code": "930001"}, "930001"),
    ("a-emer", K.NOTIFICATION_KIND_EMERGENCY_CODE, {"code": "930002"}, "930002"),
    (
        "a-reset",
        K.NOTIFICATION_KIND_PASSWORD_RESET,
        {"reset_url": "https://portal/reset/930003", "expires_minutes": "60", "invite": "false"},
        "https://portal/reset/930003",
    ),
    (
        "locked:u-1:1768478400",
        K.NOTIFICATION_KIND_ACCOUNT_LOCKED,
        {"locked_until": AT, "locked_minutes": "15"},
        "unlocks at 2026-01-15 13:00 CET",
    ),
    ("a-2fa-on", K.NOTIFICATION_KIND_TWO_FACTOR_ENABLED, {"changed_at": AT}, "13:00 CET"),
    ("a-2fa-off", K.NOTIFICATION_KIND_TWO_FACTOR_DISABLED, {"changed_at": AT}, "disabled"),
    ("a-2fa-dev", K.NOTIFICATION_KIND_TWO_FACTOR_DEVICE_CHANGED, {"changed_at": AT}, "device"),
    (
        "a-emer-used",
        K.NOTIFICATION_KIND_EMERGENCY_CODE_USED,
        {"used_at": AT, "source_ip": "203.0.113.9", "recovery_codes_left": "0"},
        "from 203.0.113.9",
    ),
    (
        "a-rec-used",
        K.NOTIFICATION_KIND_RECOVERY_CODE_USED,
        {"used_at": AT, "source_ip": "203.0.113.9", "recovery_codes_left": "4"},
        "Recovery codes left: 4",
    ),
]


async def test_every_auth_kind_over_the_bus_in_the_account_time_zone_with_metrics(
    env: dict[str, str],
    smtp: RecordingSmtpServer,
    producer: EventProducer,
    deliveries: Any,
    infra: Infra,
    names: Any,
) -> None:
    metrics_port = free_port()
    proc = start({**env, "TMSP_NOTIFIER_METRICS_PORT": str(metrics_port)})
    try:
        account = accounts_pb2.AccountSnapshot(
            account_id="acct-1", name="Acme", time_zone="Europe/Berlin", version=1
        )
        await producer.publish(ACCOUNTS, account, key="acct-1", account_id="acct-1")
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(infra.mongo_url)
        accounts = client[names.database("notifier")]["accounts"]
        await wait_until(lambda: accounts.find_one({"_id": "acct-1"}), timeout=30)
        await client.close()
        requests = [
            notifications_pb2.NotificationRequest(
                notification_id=nid,
                kind=kind,  # type: ignore[arg-type]
                account_id="acct-1",
                recipients=["ada@acme.example"],
                params={"user_name": "Ada", **params},
            )
            for nid, kind, params, _ in AUTH_REQUESTS
        ]
        await publish_all(producer, requests)
        await publish_all(producer, requests[3:4])  # the lockout redelivered
        await wait_until(lambda: len(smtp.messages) >= len(AUTH_REQUESTS), timeout=30)
        await asyncio.sleep(1.0)
        by_id = {str(m["X-TMSP-Notification-Id"]): m for m in smtp.messages}
        assert len(smtp.messages) == len(AUTH_REQUESTS) == len(by_id)
        for nid, _, _, shown in AUTH_REQUESTS:
            mail = by_id[nid]
            assert mail["To"] == "ada@acme.example"
            text, html = mail.get_body(("plain",)), mail.get_body(("html",))
            assert text is not None and html is not None
            assert shown in text.get_content() and shown in html.get_content(), nid
            assert "Ada" in text.get_content()
            assert "930" not in str(mail["Subject"])  # no code or reset link in a subject
        locked = by_id["locked:u-1:1768478400"]
        digest = hashlib.sha256(b"locked:u-1:1768478400").hexdigest()[:40]
        assert locked["Message-ID"] == f"<h-{digest}@tmsp.notifier>"
        doc = await deliveries.find_one({"_id": "locked:u-1:1768478400"})
        assert doc["state"] == "sent" and doc["message_id"] == locked["Message-ID"]
        assert not await deliveries.find_one({"params": {"$exists": True}})
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as r:  # noqa: S310
            scraped = r.read().decode()
        assert 'tmsp_notifier_emails_sent_total{kind="confirmation_code"} 1.0' in scraped
        assert 'tmsp_notifier_emails_sent_total{kind="account_locked"} 1.0' in scraped
        assert "tmsp_notifier_duplicates_suppressed_total 1.0" in scraped
        assert "tmsp_notifier_send_seconds_count 9.0" in scraped
    finally:
        proc.terminate()
    logged = proc.logged_content
    assert "930001" not in logged and "930002" not in logged  # codes never logged
    assert "reset/930003" not in logged
