from __future__ import annotations

from datetime import timedelta
from email.message import EmailMessage

import pytest

from tmsp_common.clock import FakeClock
from tmsp_notifier.adapters.memory import RecordingDeadLetters, RecordingSender
from tmsp_notifier.domain.model import (
    AccountProfile,
    Attachment,
    DeliveryState,
    Kind,
    KindSettings,
    Notification,
)
from tmsp_notifier.service_layer.delivery import Deliverer
from tmsp_notifier.service_layer.ports import PermanentSendError, TransientSendError

CODE = "735102"


def code_request(nid: str = "req-1", to: str = "user@x.example") -> Notification:
    return Notification(
        notification_id=nid,
        kind=Kind.CONFIRMATION_CODE,
        account_id="acct",
        recipients=(to,),
        params={"code": CODE, "user_name": "Ada"},
    )


def text_and_html(msg: EmailMessage) -> tuple[str, str]:
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


async def test_one_mail_with_headers_and_both_parts(
    deliverer: Deliverer, sender: RecordingSender
) -> None:
    record = await deliverer.deliver(code_request())
    assert record.state == DeliveryState.SENT and record.attempts == 1
    assert record.last_reply.startswith("250")
    (msg,) = sender.sent
    assert msg["Message-ID"] == "<req-1@tmsp.notifier>"
    assert msg["To"] == "user@x.example"
    assert msg["From"] == "TMSP <notify@tmsp.example>"
    assert CODE not in msg["Subject"]
    text, html = text_and_html(msg)
    assert CODE in text and CODE in html
    assert CODE not in repr(record)


async def test_redelivery_never_sends_twice(deliverer: Deliverer, sender: RecordingSender) -> None:
    await deliverer.deliver(code_request())
    again = await deliverer.deliver(code_request())
    assert again.state == DeliveryState.SENT and again.attempts == 1
    assert len(sender.sent) == 1


async def test_crash_after_accept_resends_with_same_message_id(
    deliverer: Deliverer, sender: RecordingSender
) -> None:
    # The previous process claimed and marked "sending", then died before recording.
    n = code_request()
    first = await deliverer.deliver(n)
    await deliverer.log.mark(n.notification_id, DeliveryState.SENDING, first.updated_at)
    await deliverer.deliver(n)
    assert [m["Message-ID"] for m in sender.sent] == ["<req-1@tmsp.notifier>"] * 2


async def test_connection_errors_and_4xx_are_retried_with_backoff(
    deliverer: Deliverer, sender: RecordingSender, sleeps: list[float]
) -> None:
    sender.script = [
        TransientSendError("connection refused", connection=True),
        TransientSendError("451 4.3.0 try later"),
        TransientSendError("connection refused", connection=True),
    ]
    record = await deliverer.deliver(code_request())
    assert record.state == DeliveryState.SENT and record.attempts == 4
    assert sleeps == [0.5, 1.0, 2.0]
    assert len(sender.sent) == 1


async def test_5xx_fails_and_dead_letters_without_secrets(
    deliverer: Deliverer, sender: RecordingSender, dead_letters: RecordingDeadLetters
) -> None:
    sender.script = [PermanentSendError("550 5.1.1 no such user")]
    record = await deliverer.deliver(code_request())
    assert record.state == DeliveryState.FAILED and "550" in record.last_reply
    (letter,) = dead_letters.letters
    assert letter[1].startswith("smtp: 550")
    again = await deliverer.deliver(code_request())
    assert again.state == DeliveryState.FAILED and sender.attempts == 1


async def test_too_many_4xx_give_up_and_dead_letter(
    deliverer: Deliverer, sender: RecordingSender, dead_letters: RecordingDeadLetters
) -> None:
    sender.script = [TransientSendError("452 mailbox full")] * 5
    record = await deliverer.deliver(code_request())
    assert record.state == DeliveryState.FAILED and record.attempts == 3
    assert "gave up" in dead_letters.letters[0][1]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"recipients": ("a@x.example\r\nBcc: evil@x.example",)}, "recipients"),
        ({"recipients": ()}, "recipients"),
        ({"notification_id": "bad id\r\n"}, "notification_id"),
        ({"params": {}}, "params"),
        (
            {"attachments": (Attachment("r.pdf", "application/pdf", b"x" * 2000),)},
            "attachments",
        ),
    ],
)
async def test_invalid_requests_are_rejected_and_dead_lettered(
    deliverer: Deliverer,
    sender: RecordingSender,
    dead_letters: RecordingDeadLetters,
    change: dict[str, object],
    field: str,
) -> None:
    from dataclasses import replace

    n = replace(code_request(), **change)  # type: ignore[arg-type]
    record = await deliverer.deliver(n)
    assert record.state == DeliveryState.REJECTED
    assert sender.attempts == 0
    assert dead_letters.letters[0][1].startswith(f"invalid: {field}")


async def test_storm_becomes_twelve_mails_and_one_digest(
    deliverer: Deliverer, sender: RecordingSender, clock: FakeClock
) -> None:
    await deliverer.accounts.upsert(
        AccountProfile("acct", name="Acme", managed_by_email="admin@x.example", time_zone="UTC")
    )
    for i in range(30):
        await deliverer.deliver(
            Notification(
                notification_id=f"inc-{i}",
                kind=Kind.INCIDENT,
                account_id="acct",
                recipients=("admin@x.example",),
                params={"title": f"t{i}", "severity": "High", "incident_id": f"i{i}"},
                throttle=True,
                summary=f"incident {i:02d}",
            )
        )
    assert len(sender.sent) == 12
    assert await deliverer.flush_digests() == 0  # window still open
    clock.advance(timedelta(hours=1))
    assert await deliverer.flush_digests() == 1
    assert await deliverer.flush_digests() == 0
    digest = sender.sent[-1]
    assert len(sender.sent) == 13
    assert digest["Subject"] == "Digest: 18 more incident notifications"
    text, _ = text_and_html(digest)
    assert "incident 12" in text and "incident 29" in text and "incident 11" not in text
    # redelivery of a digested item does not send or digest it again
    held = await deliverer.deliver(
        Notification(
            notification_id="inc-20",
            kind=Kind.INCIDENT,
            account_id="acct",
            recipients=("admin@x.example",),
            params={"title": "t20", "severity": "High"},
            throttle=True,
        )
    )
    assert held.state == DeliveryState.DIGESTED and len(sender.sent) == 13


async def test_throttle_follows_account_settings(
    deliverer: Deliverer, sender: RecordingSender
) -> None:
    await deliverer.settings.put(
        KindSettings("acct", Kind.PRODUCT_OFFLINE, max_per_hour=2, digest=False)
    )
    for i in range(4):
        await deliverer.deliver(
            Notification(
                notification_id=f"off-{i}",
                kind=Kind.PRODUCT_OFFLINE,
                account_id="acct",
                recipients=("a@x.example",),
                params={"product_id": "p1"},
                throttle=True,
            )
        )
    assert len(sender.sent) == 2
    dropped = await deliverer.log.get("off-3")
    assert dropped is not None and dropped.state == DeliveryState.DROPPED


async def test_attachment_is_sent(deliverer: Deliverer, sender: RecordingSender) -> None:
    await deliverer.deliver(
        Notification(
            notification_id="rep-1",
            kind=Kind.REPORT_READY,
            account_id="acct",
            recipients=("a@x.example",),
            params={"report_name": "Weekly", "attached": "yes"},
            attachments=(Attachment("weekly.pdf", "application/pdf", b"%PDF-1.4 x"),),
        )
    )
    (msg,) = sender.sent
    (att,) = list(msg.iter_attachments())
    assert att.get_filename() == "weekly.pdf" and att.get_content() == b"%PDF-1.4 x"


async def test_request_without_recipients_goes_to_account_recipients(
    deliverer: Deliverer, sender: RecordingSender
) -> None:
    await deliverer.accounts.upsert(AccountProfile("acct", managed_by_email="admin@x.example"))
    await deliverer.settings.put(
        KindSettings("acct", Kind.REPORT_READY, extra_recipients=("boss@x.example",))
    )
    record = await deliverer.deliver_request(
        Notification("rep-9", Kind.REPORT_READY, "acct", (), {"report_name": "Weekly"})
    )
    assert record.state == DeliveryState.SENT
    assert sender.sent[0]["To"] == "admin@x.example, boss@x.example"


async def test_request_of_a_disabled_kind_is_skipped(
    deliverer: Deliverer, sender: RecordingSender
) -> None:
    await deliverer.settings.put(KindSettings("acct", Kind.REPORT_READY, enabled=False))
    record = await deliverer.deliver_request(
        Notification("rep-10", Kind.REPORT_READY, "acct", ("a@x.example",), {})
    )
    assert record.state == DeliveryState.SKIPPED and sender.sent == []
    # security mails ignore account settings: never muted
    sent = await deliverer.deliver_request(code_request("sec-1"))
    assert sent.state == DeliveryState.SENT


class LogSpyingSender:
    """Reads the delivery log at the moment each mail goes out, then hands it on."""

    def __init__(self, deliverer: Deliverer, inner: RecordingSender) -> None:
        self.deliverer, self.inner = deliverer, inner
        self.seen: list[tuple[str, int]] = []

    async def send(self, message: EmailMessage) -> str:
        record = await self.deliverer.log.get(str(message["X-TMSP-Notification-Id"]))
        assert record is not None
        self.seen.append((record.state.value, record.attempts))
        return await self.inner.send(message)


async def test_each_attempt_is_recorded_before_the_send_and_its_result_after(
    deliverer: Deliverer, sender: RecordingSender
) -> None:
    spy = LogSpyingSender(deliverer, sender)
    deliverer.sender = spy
    sender.script = [TransientSendError("451 4.3.0 later")]
    record = await deliverer.deliver(code_request())
    assert spy.seen == [("sending", 1), ("sending", 2)]  # written before the mail went out
    assert record.state == DeliveryState.SENT and record.attempts == 2
    stored = await deliverer.log.get("req-1")
    assert stored is not None and stored.state == DeliveryState.SENT
    assert stored.last_reply == "250 2.0.0 OK" and stored.sent_at is not None
