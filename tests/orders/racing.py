"""Doing one thing many times at once, from several processes, and waiting for the workers."""

from __future__ import annotations

import importlib
import multiprocessing
import re
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from flask import current_app
from sqlalchemy.orm import configure_mappers

from app.billing.key_format import hash_key
from app.extensions import db
from app.models import ApiKey
from tests.admin.conftest import csrf_from
from tests.conftest import wait_until
from tests.smtp_sink import text_of


def at_once(calls: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run every call in its own thread, all released together; returns their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int, call: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[index] = call()
        except BaseException as exc:  # re-raised in the test's thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if errors:
        raise errors[0]
    return results


def queued_tasks(redis: Any) -> int:
    """Messages waiting in the broker plus those a worker holds unacknowledged (acks_late)."""
    return int(redis.llen("celery")) + int(redis.hlen("unacked"))


def wait_for_workers(redis: Any, timeout: float = 30.0) -> None:
    """Until the broker has had nothing to deliver and nothing in flight for a moment."""

    def idle_twice() -> bool:
        if queued_tasks(redis):
            return False
        time.sleep(0.3)  # a message between the queue and the unacked hash, or a task queueing another
        return queued_tasks(redis) == 0

    wait_until(idle_twice, timeout=timeout, interval=0.1)


def enqueue(app: Any, task: str, args: list[Any], times: int) -> None:
    celery = app.extensions["celery"]
    for _ in range(times):
        celery.send_task(task, args=args)


def run_in_processes(
    config: dict[str, Any],
    target: str,
    calls: Sequence[tuple[Any, ...]],
    processes: int = 4,
    prepare: tuple[str, tuple[Any, ...]] | None = None,
    meanwhile: Callable[[], Any] | None = None,
) -> list[list[Any]]:
    """Call `target` ("module:function") with each argument tuple in `calls`, in `processes` fresh
    processes at once: each builds its own app on `config` (so they share only the database and
    Redis, like workers), waits for the others, then makes every call, starting at a different one.
    `prepare` ("module:function", args) runs in each process before the start; its result becomes
    every call's first argument. `meanwhile` runs here from the same start. Returns each process's
    results: what a call returned (its repr unless a plain value), or "raised <name>: <message>"."""
    ctx = multiprocessing.get_context("spawn")  # fork would copy this process's threads' locks
    barrier = ctx.Barrier(processes + 1)
    answers = ctx.Queue()
    children = [
        ctx.Process(target=_child, args=(config, prepare, target, [*calls[i:], *calls[:i]], barrier, answers))
        for i in range(processes)
    ]
    for child in children:
        child.start()
    try:
        barrier.wait(timeout=60)
        if meanwhile is not None:
            meanwhile()
        replies = [answers.get(timeout=90) for _ in children]
    finally:
        for child in children:
            child.join(10)
            if child.is_alive():
                child.kill()
    failures = [detail for status, detail in replies if status == "error"]
    assert not failures, failures[0]
    return [detail for _status, detail in replies]


def _child(
    config: dict[str, Any],
    prepare: tuple[str, tuple[Any, ...]] | None,
    target: str,
    calls: list[tuple[Any, ...]],
    barrier: Any,
    answers: Any,
) -> None:
    try:
        from app import create_app
        from app.extensions import db
        from config import TestingConfig

        app = create_app(TestingConfig, config)
        function = _function(target)
        with app.app_context():
            _warm_up(db)
            first = (_function(prepare[0])(*prepare[1]),) if prepare else ()
            barrier.wait(timeout=60)
            answers.put(("ok", [_call(function, (*first, *args)) for args in calls]))
    except BaseException:
        answers.put(("error", traceback.format_exc()))


def _function(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _warm_up(db: Any) -> None:
    """Connect, and pay the first query's one-off costs (mapper set-up), before the start: the
    processes then leave the barrier in step, so the race is the code's, not the start-up's."""
    configure_mappers()
    for mapper in db.Model.registry.mappers:
        db.session.execute(db.select(mapper.class_).limit(1)).first()
    db.session.rollback()


def _call(function: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    try:
        result = function(*args)
    except Exception as exc:
        return f"raised {type(exc).__name__}: {exc}"
    return result if isinstance(result, str | int | bool | None) else repr(result)


# -- a browser in a worker process: the app's own views, without an HTTP server in between ---------


def browser(form_page: str) -> tuple[Any, str]:
    """A fresh browser that has opened `form_page`: its client and the form's CSRF token."""
    client = current_app.test_client()
    return client, csrf_from(client.get(form_page).get_data(as_text=True))


def admin_browser(email: str, password: str) -> tuple[Any, str]:
    """A browser logged in to the admin, with its CSRF token."""
    client, token = browser("/admin/login")
    client.post("/admin/login", data={"email": email, "password": password, "csrf_token": token})
    return client, csrf_from(client.get("/admin/keys/new").get_data(as_text=True))


def submit(browser: tuple[Any, str], path: str) -> int:
    """POST the form (nothing but its CSRF token) to `path`; returns the status code."""
    client, token = browser
    return client.post(path, data={"csrf_token": token}).status_code


KEY = re.compile(r"sk-gateway-[A-Za-z0-9]{40}")


def one_replacement_email(mail: Any, redis: Any, key_id: int, old_key: str) -> str:
    """After a race: exactly one email went out, and the key in it is the key's secret now."""
    (message,) = mail.wait_for(1)
    wait_for_workers(redis)
    assert len(mail.messages) == 1
    new_key = KEY.search(text_of(message)).group(0)
    db.session.expire_all()
    assert db.session.get(ApiKey, key_id).key_hash == hash_key(new_key) != hash_key(old_key)
    return new_key
