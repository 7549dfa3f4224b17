"""Gift code format: 100 random bits, typed forgivingly, hashed and shown like API keys."""

from __future__ import annotations

import math
import re

import pytest

from app.giftcodes.code_format import ALPHABET, SYMBOLS, display_prefix, generate_code, hash_code, normalise

pytestmark = pytest.mark.unit

CODE = "RG-7K3M-Q9XZ-0A1B-C2D3-E4F5"


def test_a_code_carries_at_least_100_random_bits_in_a_readable_format():
    assert SYMBOLS * math.log2(len(ALPHABET)) >= 100
    codes = {generate_code() for _ in range(2000)}
    assert len(codes) == 2000
    assert all(re.fullmatch(r"RG(-[0-9A-HJKMNP-TV-Z]{4}){5}", c) for c in codes)
    used = {symbol for code in codes for symbol in code[3:].replace("-", "")}
    assert used == set(ALPHABET)  # every symbol of the alphabet turns up: no bias towards a part of it


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        (CODE, CODE),
        (CODE.lower(), CODE),
        ("rg 7k3m q9xz 0a1b c2d3 e4f5", CODE),
        ("RG7K3MQ9XZ0A1BC2D3E4F5", CODE),
        ("7K3M-Q9XZ-0A1B-C2D3-E4F5", CODE),  # without RG-
        ("  RG-7K3M-Q9XZ-0A1B-C2D3-E4F5\n", CODE),  # pasted with white space
        ("RG–7K3M—Q9XZ-0A1B-C2D3-E4F5", CODE),  # dashes a phone's keyboard or a chat app substituted
        ("RG-7K3M-Q9XZ-OAIB-C2D3-E4F5", CODE),  # Crockford: O reads as 0, I as 1
        ("rg-7k3m-q9xz-0alb-c2d3-e4f5", CODE),  # and l as 1
        ("RG-RG7K-3MQ9-XZ0A-1BC2-D3E4", "RG-RG7K-3MQ9-XZ0A-1BC2-D3E4"),  # random part starting with RG
        ("RG7K3MQ9XZ0A1BC2D3E4", "RG-RG7K-3MQ9-XZ0A-1BC2-D3E4"),  # 20 symbols: all of them are the code
    ],
)
def test_typed_codes_normalise_to_one_canonical_form(typed, canonical):
    assert normalise(typed) == canonical


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "RG-7K3M-Q9XZ-0A1B-C2D3",  # a group short
        "RG-7K3M-Q9XZ-0A1B-C2D3-E4F5-AAAA",  # a group long
        "RG-7K3M-Q9XZ-0A1B-C2D3-E4FU",  # U is not a Crockford symbol
        "RG-7K3M-Q9XZ-0A1B-C2D3-E4F!",
        "XX-7K3M-Q9XZ-0A1B-C2D3-E4F5",
        "sk-gateway-abc",
        "RG-７K3M-Q9XZ-0A1B-C2D3-E4F5",  # a full-width digit
    ],
)
def test_what_cannot_be_a_code_normalises_to_none(typed):
    assert normalise(typed) is None


def test_the_hash_is_of_the_canonical_form_and_the_prefix_shows_20_of_100_bits():
    assert hash_code(normalise(CODE.lower())) == hash_code(CODE)
    assert len(hash_code(CODE)) == 64 and CODE not in hash_code(CODE)
    assert display_prefix(CODE) == "RG-7K3M"
