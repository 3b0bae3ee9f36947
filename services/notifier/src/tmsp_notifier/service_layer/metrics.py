"""The notifier's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EMAILS_SENT = Counter("tmsp_notifier_emails_sent_total", "Mails accepted by the server", ["kind"])
EMAILS_FAILED = Counter(
    "tmsp_notifier_emails_failed_total", "Mails refused for good (5xx or gave up)", ["kind"]
)
EMAILS_RETRIED = Counter(
    "tmsp_notifier_email_retries_total", "Send attempts retried", ["kind", "cause"]
)
EMAILS_REJECTED = Counter(
    "tmsp_notifier_requests_rejected_total", "Invalid notification requests", ["reason"]
)
EMAILS_DIGESTED = Counter(
    "tmsp_notifier_emails_digested_total", "Items held back for a digest", ["kind"]
)
EMAILS_DUPLICATES = Counter(
    "tmsp_notifier_duplicates_suppressed_total", "Redelivered notifications not sent again"
)
SEND_SECONDS = Histogram(
    "tmsp_notifier_send_seconds",
    "Time from handing a mail to the SMTP client to the server's reply",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
