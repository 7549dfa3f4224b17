"""Prometheus metrics: what the relay did, by public model and upstream, for an operator's dashboards.

gunicorn runs several worker processes, each with its own counters. With PROMETHEUS_MULTIPROC_DIR
set (gunicorn.conf.py sets a fresh directory per start unless the operator chose one),
prometheus-client keeps every process's values in files there and a scrape adds them up; without it
(flask run, a Celery worker, tests in one process) a scrape reads this process's own registry.

The relay and billing call the functions below; nothing here knows about Flask, Redis or SQL.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = CONTENT_TYPE_LATEST
_SECONDS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600)

REQUESTS = Counter(
    "relaygate_requests_total",
    "Chat completion requests that reached the relay, by public model, upstream and HTTP status.",
    ["model", "upstream", "status"],
)
DURATION = Histogram(
    "relaygate_request_duration_seconds",
    "From admission to the last byte (or the error), by public model and whether it streamed.",
    ["model", "stream"],
    buckets=_SECONDS,
)
FIRST_TOKEN = Histogram(
    "relaygate_time_to_first_token_seconds",
    "From admission to the first generated text sent to the client.",
    ["model"],
    buckets=_SECONDS,
)
ENDINGS = Counter(
    "relaygate_stream_endings_total",
    "How streams ended: done, client_closed, upstream_error, timeout, quota.",
    ["model", "reason"],
)
BILLED = Counter("relaygate_tokens_billed_total", "Tokens charged to keys, multipliers applied.", ["model"])
REPORTED = Counter(
    "relaygate_upstream_tokens_total",
    "Tokens the upstream reported in its usage, by kind (prompt, completion).",
    ["model", "kind"],
)
IN_FLIGHT = Gauge(
    "relaygate_requests_in_flight",
    "Admitted requests not yet settled, by whether they stream.",
    ["stream"],
    multiprocess_mode="livesum",
)
FAILOVERS = Counter(
    "relaygate_failovers_total",
    "Attempts that failed before the client got a byte (the request moved to the next account, if any).",
    ["upstream"],
)
CIRCUITS = Counter(
    "relaygate_circuit_openings_total",
    "Times an upstream was taken out of rotation (breaker opened or account disabled).",
    ["upstream", "reason"],
)


_children: dict[tuple[object, tuple[str, ...]], object] = {}


def _child(metric: object, *labels: str) -> Any:
    """metric.labels(*labels), looked up once per process: labels() validates and locks every call."""
    key = (metric, labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)  # type: ignore[attr-defined]
    return child


def admitted(stream: bool) -> None:
    _child(IN_FLIGHT, _flag(stream)).inc()


def settled(
    *,
    model: str,
    upstream: str,
    stream: bool,
    status: int,
    outcome: str,
    seconds: float,
    first_token_seconds: float | None,
    billed: int,
    reported: tuple[int, int] | None,
) -> None:
    """One request's end, called once per admitted request (metering settles once)."""
    _child(IN_FLIGHT, _flag(stream)).dec()
    _child(REQUESTS, model, upstream or "none", str(status)).inc()
    _child(DURATION, model, _flag(stream)).observe(seconds)
    if first_token_seconds is not None:
        _child(FIRST_TOKEN, model).observe(first_token_seconds)
    if stream:
        _child(ENDINGS, model, outcome).inc()
    if billed:
        _child(BILLED, model).inc(billed)
    if reported is not None:
        _child(REPORTED, model, "prompt").inc(reported[0])
        _child(REPORTED, model, "completion").inc(reported[1])


def failed_over(upstream: str) -> None:
    _child(FAILOVERS, upstream).inc()


def circuit_opened(upstream: str, reason: str) -> None:
    _child(CIRCUITS, upstream, reason).inc()


def _flag(value: bool) -> str:
    return "true" if value else "false"


class _Sampled(Collector):
    """Gauges read at scrape time (queue lengths): `read` returns name -> (help, value)."""

    def __init__(self, read: Callable[[], dict[str, tuple[str, float]]]) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, (text, value) in self.read().items():
            yield GaugeMetricFamily(name, text, value=value)


def multiprocess_dir() -> str | None:
    # prometheus-client reads this variable itself, when it is first imported; so do we, to agree.
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition(sampled: Callable[[], dict[str, tuple[str, float]]]) -> bytes:
    """The text a scrape gets: every process's metrics (or this one's) and the sampled gauges."""
    directory = multiprocess_dir()
    if directory:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        collectors: Iterable[Collector] = (registry, _Sampled(sampled))
    else:
        collectors = (REGISTRY, _Sampled(sampled))
    return b"".join(generate_latest(c) for c in collectors)  # type: ignore[arg-type]
