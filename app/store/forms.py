"""Reading the storefront's own form fields (pure): what a browser can send, and what it cannot."""

from __future__ import annotations

from collections.abc import Sequence

TICKED = ("1", "on", "true", "yes")  # "on" is what a checkbox without a value attribute sends
UNTICKED = ("", "0", "off", "false", "no")


class BadField(ValueError):
    """A field no form of ours sends. `code` picks the message shown on the page."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def is_ticked(values: Sequence[str], code: str) -> bool:
    """A checkbox's values as the form sent them (request.form.getlist): none when unticked.
    Raises BadField(code) for more than one value or one that is neither ticked nor unticked."""
    if not values:
        return False
    if len(values) > 1:
        raise BadField(code)
    value = values[0].strip().lower()
    if value not in TICKED + UNTICKED:
        raise BadField(code)
    return value in TICKED
