"""The relay's JSON codec: the standard library's results, faster, for everything a client or an
upstream may send, including what orjson alone would refuse."""

from __future__ import annotations

import json

import pytest

from app.relay import jsonbytes

VALUES = {
    "a chat body": {"model": "m", "messages": [{"role": "user", "content": "héllo 你好 🙂"}], "stream": True},
    "an integer beyond 64 bits": {"seed": 2**70},
    "a lone surrogate": {"content": "cut emoji \ud83d"},
    "a non-string key": {1: "one"},
    "floats": {"temperature": 0.7, "top_p": 1e-7, "big": 1e16},
    "nothing": None,
}


@pytest.mark.parametrize("name", list(VALUES))
def test_dumps_round_trips_whatever_the_standard_library_can(name):
    value = VALUES[name]
    out = jsonbytes.dumps(value)
    assert isinstance(out, bytes)
    expected = json.loads(json.dumps(value, ensure_ascii=False))
    assert json.loads(out) == expected
    assert b", " not in out and b'": ' not in out  # compact
    if name == "a chat body":
        assert "你好".encode() in out  # UTF-8, not \\u escapes


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b'{"a":[1,2,{"b":null}]}', {"a": [1, 2, {"b": None}]}),
        (b'"\\ud83d"', "\ud83d"),  # valid JSON that orjson alone refuses
        (b'{"n":123456789012345678}', {"n": 123456789012345678}),
        ('{"s":"é"}', {"s": "é"}),
    ],
)
def test_loads_reads_what_the_standard_library_reads(raw, expected):
    assert jsonbytes.loads(raw) == expected


@pytest.mark.parametrize("raw", [b"", b"{", b"data: {}", b"[" * 5000 + b"]" * 5000, b"\xff\xfe"])
def test_loads_refuses_what_is_not_json_with_a_value_error(raw):
    with pytest.raises(ValueError):
        jsonbytes.loads(raw)
