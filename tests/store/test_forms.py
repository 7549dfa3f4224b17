"""The storefront's form fields: a checkbox is ticked, unticked, or something no form of ours sends."""

from __future__ import annotations

import pytest

from app.store.forms import BadField, is_ticked

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("values", "ticked"),
    [
        ([], False),  # a browser sends nothing for an unticked box
        (["1"], True),
        (["on"], True),  # a box without a value attribute
        (["ON "], True),
        (["true"], True),
        ([""], False),
        (["0"], False),
        (["off"], False),
    ],
)
def test_a_checkbox_is_ticked_or_not(values, ticked):
    assert is_ticked(values, "box") is ticked


@pytest.mark.parametrize("values", [["maybe"], ["2"], ["1", "1"], ["1", "0"], ["<script>"]])
def test_anything_else_is_refused_with_the_fields_code(values):
    with pytest.raises(BadField) as caught:
        is_ticked(values, "low_balance")
    assert caught.value.code == "low_balance"
