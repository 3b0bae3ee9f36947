"""Build the MIME message of a notification: one mail, text and HTML alternatives."""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from tmsp_notifier.domain.model import Attachment
from tmsp_notifier.domain.policy import message_id
from tmsp_notifier.service_layer.rendering import RenderedEmail


def compose(
    *,
    notification_id: str,
    sender: str,
    recipients: tuple[str, ...],
    email: RenderedEmail,
    now: datetime,
    attachments: tuple[Attachment, ...] = (),
) -> EmailMessage:
    """The message; its Message-ID is derived from ``notification_id`` (see policy)."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = email.subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = message_id(notification_id)
    msg["X-TMSP-Notification-Id"] = notification_id
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(email.text, subtype="plain", charset="utf-8")
    msg.add_alternative(email.html, subtype="html", charset="utf-8")
    for a in attachments:
        maintype, _, subtype = a.content_type.partition("/")
        msg.add_attachment(a.content, maintype=maintype, subtype=subtype, filename=a.filename)
    return msg
