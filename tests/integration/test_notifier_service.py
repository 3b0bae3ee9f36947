"""The notifier as deployed: a subprocess consuming real Kafka, storing in the real
Mongo-wire server and mailing a real SMTP server on loopback."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from tmsp.events.v1 import notifications_pb2
from tmsp_common.kafka.consumer import DLQ_REASON
from tmsp_common.kafka.producer import EventProducer
from tmsp_common.kafka.topics import NOTIFICATION_REQUESTS
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
    assert f"{CODE_PREFIX}000" not in proc.logs  # codes are never logged


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
        rejected = await deliveries.find_one({"_id": "inj-1"})
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
