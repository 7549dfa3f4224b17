"""SillyTavern joins URLs by string, so a base URL ending in "/" yields "/v1//chat/completions".

Werkzeug would answer such paths with a redirect, which clients do not follow with the body;
collapsing repeated slashes (and a trailing one) under /v1 before routing makes them just work.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

_SLASHES = re.compile(r"/{2,}")


def normalize(path: str) -> str:
    if "//" in path:
        path = _SLASHES.sub("/", path)
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
    return path


class NormalizeApiPaths:
    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith(("/v1", "//v1")) or (
            path.endswith("/") and path.rstrip("/") in ("/models", "/chat/completions")
        ):
            environ["PATH_INFO"] = normalize(path)
        return self.app(environ, start_response)
