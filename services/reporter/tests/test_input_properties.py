"""Outside input (page tokens, recipient addresses, triage notes) either parses or is refused with
InvalidArgument naming the field: never another exception, never a header injection."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tmsp_common.errors import InvalidArgument
from tmsp_common.paging import decode_time_token, decode_token, encode_token
from tmsp_reporter.domain.validation import MAX_STATUS_NOTE, normalise_email, status_note

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@given(st.text(max_size=200))
def test_any_text_token_is_parsed_or_refused(token: str) -> None:
    try:
        decode_time_token(token)
    except InvalidArgument as exc:
        assert exc.field == "page_token"


@given(json_values)
def test_any_json_token_is_parsed_or_refused(value: object) -> None:
    token = base64.urlsafe_b64encode(json.dumps(value).encode()).decode()
    try:
        decode_token(token, 2)
        decode_time_token(token)
    except InvalidArgument as exc:
        assert exc.field == "page_token"


def test_tokens_round_trip() -> None:
    token = encode_token("2026-01-01T00:00:00+00:00", "inc-1")
    at, key = decode_time_token(token) or (None, None)
    assert key == "inc-1" and at is not None and at.year == 2026
    with pytest.raises(InvalidArgument):
        decode_time_token(encode_token("2026-01-01T00:00:00", "naive"))


@given(st.text(max_size=80))
def test_addresses_are_bare_or_refused(raw: str) -> None:
    try:
        address = normalise_email(raw)
    except InvalidArgument as exc:
        assert exc.field == "email"
        return
    assert not any(c in address for c in "\r\n<>,; ") and address == address.lower()


@given(st.text(max_size=2100) | st.text(alphabet=st.characters(codec="ascii"), max_size=50))
def test_notes_are_clean_or_refused(raw: str) -> None:
    try:
        note = status_note(raw)
    except InvalidArgument as exc:
        assert exc.field == "note"
        return
    # stripped, line ends as newlines, nothing else changed
    assert note == note.strip() and "\r" not in note and len(note) <= MAX_STATUS_NOTE
    assert "".join(note.split()) == "".join(raw.split())
    assert all(c in "\n\t" or not (ord(c) < 32 or 127 <= ord(c) < 160) for c in note)
