"""Tables, field listings, enum labels, times and JSON as the client prints them."""

from __future__ import annotations

import io
import json

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from tmsp.auth.v1 import auth_pb2
from tmsp.events.v1 import auth_pb2 as audit_pb2
from tmsp.events.v1 import detections_pb2, incidents_pb2
from tmsp.reporter.v1 import reporter_pb2
from tmsp_client.output import (
    Output,
    Progress,
    enum_choices,
    enum_label,
    enum_prefix,
    parse_enum,
    render_fields,
    render_table,
    size,
    to_json,
    ts,
)


def test_table_pads_columns_and_keeps_outside_text_on_one_line() -> None:
    text = render_table(
        ["account", "incidents", "managed by"],
        [("Acme", 12, "admin@acme.example"), ("Globex\nInc", None, "")],
    )
    assert text.splitlines() == [
        "ACCOUNT     INCIDENTS  MANAGED BY",
        "Acme        12         admin@acme.example",
        "Globex Inc  -          -",
    ]


def test_fields_align_values() -> None:
    assert render_fields([("account", "Acme"), ("time zone", "UTC"), ("products", 0)]) == (
        "account:   Acme\ntime zone: UTC\nproducts:  0"
    )


@pytest.mark.parametrize(
    ("enum", "value", "label"),
    [
        (
            incidents_pb2.IncidentStatus,
            incidents_pb2.INCIDENT_STATUS_FALSE_POSITIVE,
            "false-positive",
        ),
        (detections_pb2.Severity, detections_pb2.SEVERITY_CRITICAL, "critical"),
        (audit_pb2.AuthAuditKind, audit_pb2.AUTH_AUDIT_KIND_LOGIN_SUCCEEDED, "login-succeeded"),
        (reporter_pb2.ReportKind, reporter_pb2.REPORT_KIND_WEEKLY_EXECUTIVE, "weekly-executive"),
        (auth_pb2.Role, auth_pb2.ROLE_PROVIDER_OPERATOR, "provider-operator"),
        (detections_pb2.Severity, 99, "99"),
    ],
)
def test_enum_labels_drop_the_type_prefix(enum: object, value: int, label: str) -> None:
    assert enum_label(enum, value) == label  # type: ignore[arg-type]


def test_enum_prefix_follows_the_type_name() -> None:
    assert enum_prefix(audit_pb2.AuthAuditKind) == "AUTH_AUDIT_KIND_"
    assert enum_prefix(reporter_pb2.SecurityCompliance) == "SECURITY_COMPLIANCE_"


def test_parse_enum_takes_any_case_and_separator_but_never_unspecified() -> None:
    status = incidents_pb2.IncidentStatus
    assert parse_enum(status, "False_Positive") == incidents_pb2.INCIDENT_STATUS_FALSE_POSITIVE
    assert parse_enum(status, " investigating ") == incidents_pb2.INCIDENT_STATUS_INVESTIGATING
    with pytest.raises(ValueError, match="not one of: new, investigating, resolved"):
        parse_enum(status, "unspecified")
    assert enum_choices(status) == ["new", "investigating", "resolved", "false-positive"]


def test_times_in_utc_and_unset_as_a_dash() -> None:
    stamp = Timestamp(seconds=1781078400, nanos=5)
    assert ts(stamp) == "2026-06-10 08:00:00Z"
    assert ts(Timestamp()) == "-"
    assert ts(stamp, present=False) == "-"


@pytest.mark.parametrize(
    ("n", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (5 * 1024**3, "5.0 GiB")]
)
def test_sizes_in_binary_units(n: int, text: str) -> None:
    assert size(n) == text


def test_json_uses_proto_field_names_and_prints_zero_values() -> None:
    row = reporter_pb2.CustomerAccount(account_id="acme", name="Acme", incidents=0)
    data = json.loads(to_json(reporter_pb2.ListCustomerAccountsResponse(accounts=[row])))
    (account,) = data["accounts"]
    assert account["account_id"] == "acme" and account["incidents"] == "0"
    assert data["next_page_token"] == ""


def test_output_prints_json_or_text() -> None:
    out = io.StringIO()
    Output(json=True, out=out).result(reporter_pb2.ListReportRecipientsResponse(), "text")
    assert json.loads(out.getvalue()) == {"recipients": []}
    out = io.StringIO()
    Output(json=False, out=out).result(reporter_pb2.ListReportRecipientsResponse(), "text")
    assert out.getvalue() == "text\n"


def test_progress_off_a_terminal_prints_only_the_summary() -> None:
    err = io.StringIO()
    progress = Progress("report", err)
    progress.add(1000)
    progress.add(24)
    line = progress.done("r.pdf")
    assert err.getvalue() == line + "\n"
    assert line.startswith("report: 1024 bytes (1.0 KiB) in ") and line.endswith(" -> r.pdf")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_updates_one_line_in_place() -> None:
    err = _Terminal()
    progress = Progress("logs", err, every_s=0)
    progress.add(10)
    progress.add(10)
    progress.done("logs.csv")
    shown = err.getvalue()
    assert shown.count("\r\033[K") == 3 and "logs: 20 B" in shown and shown.endswith("logs.csv\n")
