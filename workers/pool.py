"""Upstream pool tasks: thin shells over app.routing.probe."""

from __future__ import annotations

from celery import shared_task

from app.routing import probe


@shared_task(name="pool.probe", ignore_result=True)
def probe_upstreams() -> dict[str, str]:
    """No arguments, so no key ever travels in a payload. Not retried: the next beat tick is the retry."""
    return probe.probe_upstreams()
