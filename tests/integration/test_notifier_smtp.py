"""The SMTP sender and the delivery use case against a real SMTP server on loopback.

Needs no Kafka or MongoDB: in-memory repositories, real aiosmtplib over a real socket to a
real aiosmtpd server that records messages and answers 4xx/5xx on demand.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tmsp_common.clock import SystemClock
from tmsp_common.testing import ServiceProcess, free_port, wait_until
from tmsp_common.tls import ensure_server_certificate
from tmsp_notifier.adapters.memory import (
    MemoryAccounts,
    MemoryCounter,
    MemoryDeliveryLog,
    MemoryDigests,
    MemorySettings,
    RecordingDeadLetters,
)
from tmsp_notifier.adapters.smtp import SmtpConfig, SmtpSender
from tmsp_notifier.domain.model import DeliveryState, Kind, Notification
from tmsp_notifier.service_layer.delivery import Deliverer, RetryPolicy
from tmsp_notifier.service_layer.ports import TransientSendError
from tmsp_notifier.service_layer.rendering import Renderer
from tmsp_notifier.testing import RecordingSmtpServer

pytestmark = [pytest.mark.integration, pytest.mark.smtp]

CODE = "604129"


@pytest.fixture
def smtp() -> Iterator[RecordingSmtpServer]:
    with RecordingSmtpServer(free_port()) as server:
        yield server


def make_deliverer(port: int) -> Deliverer:
    return Deliverer(
        log=MemoryDeliveryLog(),
        settings=MemorySettings(),
        accounts=MemoryAccounts(),
        counter=MemoryCounter(),
        digests=MemoryDigests(),
        sender=SmtpSender(SmtpConfig(port=port, timeout_s=2, connections=2)),
        dead_letters=RecordingDeadLetters(),
        renderer=Renderer("https://portal.example"),
        clock=SystemClock(),
        mail_from="TMSP <notify@tmsp.example>",
        retry=RetryPolicy(initial_s=0.05, max_s=0.2, max_transient_replies=5),
    )


def code_mail(nid: str, to: str = "user@acme.example") -> Notification:
    return Notification(
        notification_id=nid,
        kind=Kind.EMERGENCY_CODE,
        account_id="acct-1",
        recipients=(to,),
        params={"code": CODE, "user_name": "Ada"},
    )


async def test_mail_headers_and_both_parts(smtp: RecordingSmtpServer) -> None:
    deliverer = make_deliverer(smtp.port)
    record = await deliverer.deliver(code_mail("em-1"))
    assert record.state == DeliveryState.SENT
    assert record.last_reply.startswith("250") and record.attempts == 1
    (got,) = smtp.received
    assert got.rcpt_tos == ["user@acme.example"]
    msg = got.message
    assert msg["Message-ID"] == "<em-1@tmsp.notifier>"
    assert msg["From"] == "TMSP <notify@tmsp.example>"
    assert msg["To"] == "user@acme.example"
    assert msg["Subject"] == "Your TMSP emergency access code"
    assert CODE not in msg["Subject"]
    assert msg.get_content_type() == "multipart/alternative"
    text, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert text is not None and html is not None
    assert CODE in text.get_content() and CODE in html.get_content()
    assert "<strong>" in html.get_content()
    await deliverer.deliver(code_mail("em-1"))  # redelivered
    assert len(smtp.messages) == 1


async def test_smtp_down_then_up_delivered_once(smtp: RecordingSmtpServer) -> None:
    deliverer = make_deliverer(smtp.port)
    smtp.stop()
    task = asyncio.create_task(deliverer.deliver(code_mail("down-1")))
    await asyncio.sleep(0.6)
    assert not task.done()
    record = await deliverer.log.get("down-1")
    assert record is not None and record.state == DeliveryState.RETRYING
    assert "connection" in record.last_reply
    smtp.start()
    record = await asyncio.wait_for(task, 10)
    assert record.state == DeliveryState.SENT and record.attempts >= 2
    assert smtp.message_ids() == {"<down-1@tmsp.notifier>": 1}


async def test_4xx_then_success(smtp: RecordingSmtpServer) -> None:
    deliverer = make_deliverer(smtp.port)
    smtp.answer_next("451 4.3.0 try again later", "452 4.2.2 mailbox busy")
    record = await deliverer.deliver(code_mail("busy-1"))
    assert record.state == DeliveryState.SENT and record.attempts == 3
    assert smtp.handler.refused == 2
    assert smtp.message_ids() == {"<busy-1@tmsp.notifier>": 1}


async def test_5xx_failed_and_dead_lettered(smtp: RecordingSmtpServer) -> None:
    deliverer = make_deliverer(smtp.port)
    smtp.answer_next("550 5.1.1 mailbox unavailable")
    record = await deliverer.deliver(code_mail("dead-1"))
    assert record.state == DeliveryState.FAILED and "550" in record.last_reply
    assert isinstance(deliverer.dead_letters, RecordingDeadLetters)
    (letter,) = deliverer.dead_letters.letters
    assert letter[1].startswith("smtp: 550")
    assert smtp.messages == []
    # the pooled connection still works for the next mail
    ok = await deliverer.deliver(code_mail("dead-2"))
    assert ok.state == DeliveryState.SENT


async def test_header_injection_never_reaches_the_server(smtp: RecordingSmtpServer) -> None:
    deliverer = make_deliverer(smtp.port)
    evil = code_mail("inj-1", to="user@acme.example\r\nBcc: thief@evil.example")
    record = await deliverer.deliver(evil)
    assert record.state == DeliveryState.REJECTED
    title = Notification(
        notification_id="inj-2",
        kind=Kind.INCIDENT,
        account_id="acct-1",
        recipients=("admin@acme.example",),
        params={"title": "x\r\nBcc: thief@evil.example", "severity": "High"},
    )
    assert (await deliverer.deliver(title)).state == DeliveryState.REJECTED
    assert smtp.messages == []


def _server_context(tls_dir: Path) -> ssl.SSLContext:
    paths = ensure_server_certificate(tls_dir, "smtp-test", hosts=("localhost", "127.0.0.1"))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(paths.cert, paths.key)
    return ctx


@pytest.mark.tls
@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_tls_modes_with_authentication(tmp_path: Path, security: str) -> None:
    ctx = _server_context(tmp_path)
    port = free_port()
    with RecordingSmtpServer(
        port, security=security, ssl_context=ctx, credentials=("mailer", "s3cret-pw")
    ) as smtp:
        config = SmtpConfig(
            host="localhost",
            port=port,
            security=security,  # type: ignore[arg-type]
            username="mailer",
            password="s3cret-pw",
            ca_file=str(tmp_path / "ca.pem"),
            timeout_s=3,
        )
        deliverer = make_deliverer(port)
        deliverer.sender = SmtpSender(config)
        record = await asyncio.wait_for(deliverer.deliver(code_mail(f"tls-{security}")), 15)
        assert record.state == DeliveryState.SENT
        assert smtp.logins == ["mailer"]
        assert smtp.message_ids() == {f"<tls-{security}@tmsp.notifier>": 1}

        wrong = SmtpSender(replace(config, password="wrong"))
        with pytest.raises(TransientSendError, match="authentication"):
            await wrong.send(smtp.messages[0])
        untrusted = SmtpSender(replace(config, ca_file=""))
        with pytest.raises(TransientSendError):
            await untrusted.send(smtp.messages[0])
        assert len(smtp.messages) == 1


async def test_devsink_stores_each_mail_as_eml(tmp_path: Path) -> None:
    port = free_port()
    mail_dir = tmp_path / "mail"
    sink = ServiceProcess(
        "tmsp_notifier.devsink", {}, args=["--port", str(port), "--dir", str(mail_dir)]
    ).start()
    try:
        sink.wait_for_log("devsink listening", timeout=20)
        deliverer = make_deliverer(port)
        record = await asyncio.wait_for(deliverer.deliver(code_mail("sink-1")), 15)
        assert record.state == DeliveryState.SENT
        files = list(mail_dir.glob("*.eml"))
        assert len(files) == 1 and "sink-1tmsp.notifier" in files[0].name
        assert b"Message-ID: <sink-1@tmsp.notifier>" in files[0].read_bytes()
        await wait_until(lambda: "mail #1 to user@acme.example" in sink.logs, timeout=10)
    finally:
        assert sink.terminate() == 0
