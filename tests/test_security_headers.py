"""app.security.header_default: set a header only when the response has none of that name."""

from __future__ import annotations

import pytest
from flask import Response

from app.security import header_default


@pytest.mark.parametrize(
    "present, name, value, expected",
    [
        ([], "X-Frame-Options", "DENY", ["DENY"]),
        ([("X-Frame-Options", "SAMEORIGIN")], "X-Frame-Options", "DENY", ["SAMEORIGIN"]),
        ([("x-frame-options", "SAMEORIGIN")], "X-Frame-Options", "DENY", ["SAMEORIGIN"]),  # names ignore case
        ([("X-Request-Id", "abc")], "x-request-id", "def", ["abc"]),
        ([("X-Other", "1")], "X-Frame-Options", "DENY", ["DENY"]),
    ],
)
def test_a_header_is_set_only_when_absent(present, name, value, expected):
    response = Response()
    for key, existing in present:
        response.headers[key] = existing
    header_default(response, name, value)
    assert response.headers.getlist(name) == expected
