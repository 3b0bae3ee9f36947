"""Property tests for the parsers of outside input that reach mail headers."""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from tmsp_common.errors import InvalidArgument
from tmsp_notifier.domain.policy import message_id
from tmsp_notifier.domain.validation import (
    validate_address,
    validate_notification_id,
    validate_subject,
)

CONTROL = st.sampled_from(["\r", "\n", "\r\n", "\x00", "\x0b", "\x1f", "\x7f"])


@given(st.text(max_size=80), CONTROL, st.text(max_size=80))
def test_any_control_character_refuses_an_address(a: str, c: str, b: str) -> None:
    try:
        validate_address(a + c + b)
    except InvalidArgument:
        return
    raise AssertionError("accepted an address with a control character")


@given(st.text(max_size=120))
def test_an_accepted_address_is_one_bare_address(raw: str) -> None:
    try:
        out = validate_address(raw)
    except InvalidArgument:
        return
    assert out.count("@") == 1
    assert not any(ch in out for ch in '\r\n<>,;"()') and out.isprintable()


@given(st.text(max_size=250))
def test_an_accepted_subject_has_no_line_break(raw: str) -> None:
    try:
        out = validate_subject(raw)
    except InvalidArgument:
        return
    assert "\r" not in out and "\n" not in out and 0 < len(out) <= 200


@given(st.text(max_size=220))
@example("abc\n")
@example("abc\r\nBcc: x")
def test_an_accepted_notification_id_fits_a_message_id(raw: str) -> None:
    try:
        out = validate_notification_id(raw)
    except InvalidArgument:
        return
    assert out.isascii() and out.isprintable() and " " not in out and len(out) <= 200
    mid = message_id(out)
    assert re.fullmatch(r"<[A-Za-z0-9][A-Za-z0-9._-]{0,127}@tmsp\.notifier>", mid)
