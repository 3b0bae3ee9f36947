"""One address rule for every service: equal however typed; injection refused."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tmsp_common.email import address_key, bare_address
from tmsp_common.errors import InvalidArgument


def test_an_address_compares_equal_however_it_was_typed() -> None:
    composed = "zoë@bücher.example"
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    forms = [composed, decomposed, "  Zoë@BÜCHER.example ", "zoë@xn--bcher-kva.example"]
    assert {address_key(f) for f in forms} == {"zoë@bücher.example"}


def test_the_local_part_keeps_its_case_for_delivery() -> None:
    assert bare_address("Ops.Team@Example.COM") == "Ops.Team@example.com"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("a@example.com\r\nBcc: b@example.com", "control characters"),
        ("a@example.com\n", "control characters"),
        ("Ops <ops@example.com>", "only a bare address"),
        ("a@example.com, b@example.com", "only a bare address"),
        ("a@example.com;b@example.com", "only a bare address"),
        ("   ", "is required"),
        ("a" * 250 + "@example.com", "is too long"),
        ("no-at-sign", "invalid email address"),
        ("a@", "invalid email address"),
    ],
)
def test_anything_but_one_bare_address_is_refused_naming_the_field(raw: str, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason) as refused:
        bare_address(raw, "recipients")
    assert refused.value.field == "recipients"


@given(st.text(max_size=80))
def test_the_lookup_form_never_raises_and_is_lower_case(raw: str) -> None:
    key = address_key(raw)
    assert key == key.lower()
    assert address_key(key) == key  # already in its lookup form
