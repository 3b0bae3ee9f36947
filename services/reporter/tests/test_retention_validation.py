"""Log maintenance cut-offs, recipient addresses, task parameters, CSV cells."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tmsp_common.errors import InvalidArgument
from tmsp_reporter.domain.retention import LogMaintenance
from tmsp_reporter.domain.validation import csv_cell, normalise_email, task_parameters


def test_cutoffs_and_bounds() -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    m = LogMaintenance(30, 7).validated()
    assert m.report_cutoff(now) == now - timedelta(days=30)
    assert m.log_cutoff(now) == now - timedelta(days=7)
    with pytest.raises(InvalidArgument, match="report_retention_days"):
        LogMaintenance(0, 7).validated()
    with pytest.raises(InvalidArgument, match="log_retention_days"):
        LogMaintenance(30, 4000).validated()


def test_recipient_addresses() -> None:
    assert normalise_email("CISO@Acme.Example") == "ciso@acme.example"
    for bad in ["a@b.example\r\nBcc: x@evil.example", "Name <a@b.example>", "a,b@c.example", "x"]:
        with pytest.raises(InvalidArgument, match="email"):
            normalise_email(bad)


def test_task_parameters() -> None:
    assert task_parameters({"pattern_name": "p"}, cleanup=True) == {"pattern_name": "p"}
    assert task_parameters({}, cleanup=False) == {}
    with pytest.raises(InvalidArgument, match="pattern_name"):
        task_parameters({}, cleanup=True)
    with pytest.raises(InvalidArgument, match="key"):
        task_parameters({"Bad Key": "v"}, cleanup=False)
    with pytest.raises(InvalidArgument, match="4096"):
        task_parameters({"k": "x" * 5000}, cleanup=False)


@given(st.text())
def test_csv_cells_never_start_a_formula(text: str) -> None:
    cell = csv_cell(text)
    assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert cell.removeprefix("'") == text or cell == text
