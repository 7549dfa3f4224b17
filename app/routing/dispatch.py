"""One request's way through a model's pool: the targets to try in order, each with a slot on
its account taken, and what became of each attempt written back to the shared state.

The hot path reads Redis only (routing.health); SQL is written once when an account is disabled.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from app import metrics
from app.routing import health
from app.routing.pool import HALF_OPEN, BreakerPolicy, Candidate, attempt_order, is_waiting_for_room
from app.routing.routes import RouteInfo, TargetInfo

log = logging.getLogger(__name__)

_POLL = 0.05  # seconds between looks for a free slot


@dataclass(frozen=True, slots=True)
class PoolSettings:
    breaker: BreakerPolicy
    lease_seconds: float  # a slot is freed after this even if its process died holding it
    queue_seconds: float  # how long to wait for a slot when every target is full
    trial_seconds: float  # how long a half-open breaker's trial request keeps others out


class PoolRequest:
    """Iterate targets() for the targets to try; report each with failed() or opened(), and
    finished() when the answer is over. abandon() frees whatever is still held."""

    def __init__(
        self,
        redis: Any,
        prefix: str,
        route: RouteInfo,
        request_id: str,
        settings: PoolSettings,
        on_disabled: Callable[[int, str], None],
        rand: float | None = None,
        epoch: Any = None,
        states: health.StateCache | None = None,
    ) -> None:
        """`epoch`: the pool state's epoch read with the request's key; with `states`, the
        accounts' states this process read under it are used instead of reading them again."""
        self.redis, self.prefix, self.route = redis, prefix, route
        self._epoch, self._states = epoch, states
        self.request_id = request_id
        self.settings = settings
        self.busy = False  # no target was tried because every usable one was full
        self._on_disabled = on_disabled
        self._rand = random.random() if rand is None else rand
        self._held: dict[int, str] = {}  # upstream id -> lease member
        self._candidates: dict[int, Candidate[TargetInfo]] = {}

    def targets(self) -> Iterator[TargetInfo]:
        tried: set[int] = set()
        order = self._order()
        for candidate in order:
            target = candidate.target
            if target.upstream_id in tried or not self._take(candidate):
                continue
            tried.add(target.upstream_id)
            yield target
        if order and not tried:
            self.busy = True  # others took the last free slots between the look and the take

    def _order(self) -> list[Candidate[TargetInfo]]:
        deadline = time.monotonic() + self.settings.queue_seconds
        epoch = self._epoch
        while True:
            candidates = health.candidates(
                self.redis, self.prefix, self.route.targets, time.time(), epoch, self._states
            )
            epoch = None  # a second look, while waiting for room, reads the state afresh
            self._candidates = {c.target.upstream_id: c for c in candidates}
            order = attempt_order(candidates, self._rand)
            if order or not is_waiting_for_room(candidates) or time.monotonic() >= deadline:
                self.busy = not order and is_waiting_for_room(candidates)
                return order
            time.sleep(_POLL)

    def _take(self, candidate: Candidate[TargetInfo]) -> bool:
        """A slot on the target's account and, when its breaker is half-open, its one trial."""
        target = candidate.target
        member = f"{self.request_id}:{target.upstream_id}"
        if not health.acquire(self.redis, self.prefix, target, member, time.time(), self.settings.lease_seconds):
            return False
        self._held[target.upstream_id] = member
        if candidate.breaker == HALF_OPEN and not health.claim_trial(
            self.redis, self.prefix, target.upstream_id, self.settings.trial_seconds
        ):
            self._release(target)  # another request is the trial
            return False
        return True

    def opened(self, target: TargetInfo) -> None:
        """The target answered and its first event was fine: its breaker closes."""
        candidate = self._candidates.get(target.upstream_id)
        if candidate is not None:
            health.record_success(self.redis, self.prefix, candidate)

    def failed(self, target: TargetInfo, *, refused: bool, counts: bool, reason: str) -> None:
        """An attempt failed before the client got anything. `refused`: the account itself was
        refused (401/402) and is taken out everywhere; `counts`: a failure for its breaker."""
        self._release(target)
        metrics.failed_over(target.upstream_name)
        if refused:
            self._disable(target, reason)
        elif counts:
            self._count_failure(target)

    def finished(self, target: TargetInfo, *, failed: bool) -> None:
        """The answer is over (also when it broke off after the client got part of it). Never
        raises: a stream still has its last frame to send."""
        try:
            self._release(target)
            if failed:
                self._count_failure(target)
        except RedisError:
            log.warning("could not record the end of a request on %s", target.upstream_name, exc_info=True)

    def abandon(self) -> None:
        for upstream_id in list(self._held):
            target = next(t for t in self.route.targets if t.upstream_id == upstream_id)
            self._release(target)

    def _release(self, target: TargetInfo) -> None:
        member = self._held.pop(target.upstream_id, None)
        if member is not None:
            health.release(self.redis, self.prefix, target, member)

    def _count_failure(self, target: TargetInfo) -> None:
        if health.record_failure(self.redis, self.prefix, target.upstream_id, time.time(), self.settings.breaker):
            metrics.circuit_opened(target.upstream_name, "breaker")

    def _disable(self, target: TargetInfo, reason: str) -> None:
        if not health.disable(self.redis, self.prefix, target.upstream_id, reason):
            return  # another request took it out first
        metrics.circuit_opened(target.upstream_name, "disabled")
        log.error("upstream %s disabled: %s", target.upstream_name, reason)
        try:
            self._on_disabled(target.upstream_id, reason)
        except SQLAlchemyError:  # the live switch is what matters; the row is for the admin
            log.warning("could not mark upstream %s disabled in the database", target.upstream_name, exc_info=True)
