"""`make run PORT=N` on a newcomer's machine (SQLite, no Redis, no PUBLIC_BASE_URL): everything a
buyer or a client is shown points at port N, PayPal's return included, and the printed key works."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from openai import OpenAI

from tests import fake_paypal
from tests.conftest import ROOT, free_port, wait_for_port
from tests.fake_paypal import FakePayPalServer

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class MakeRun:
    def __init__(self, tmp_path: Path, paypal_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "TEST_", "REDIS_", "APP_"))}
        env.pop("PUBLIC_BASE_URL", None)
        env.update(
            DATABASE_URL=f"sqlite:///{tmp_path / 'newcomer.sqlite3'}",
            USAGE_SPOOL_DIR=str(tmp_path / "spool"),
            PAYPAL_CLIENT_ID=fake_paypal.CLIENT_ID,
            PAYPAL_CLIENT_SECRET=fake_paypal.CLIENT_SECRET,
            PAYPAL_API_BASE=paypal_url,
            UPSTREAM_API_KEY="",  # the demo upstream
        )
        self.log = tmp_path / "make-run.log"
        self.proc = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"PORT={self.port}"],
            cwd=ROOT,
            env=env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # make, flask and gunicorn stop together
        )
        wait_for_port(self.port, timeout=120)

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)  # gunicorn's quick shutdown; make stops with it
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture
def paypal_server() -> Iterator[FakePayPalServer]:
    server = FakePayPalServer().start()
    yield server
    server.stop()


@pytest.fixture
def make_run(tmp_path: Path, paypal_server: FakePayPalServer) -> Iterator[MakeRun]:
    server = MakeRun(tmp_path, paypal_server.fake.base_url)
    yield server
    server.stop()


def test_make_run_on_another_port_works_end_to_end_on_that_port(make_run: MakeRun) -> None:
    url = make_run.url
    banner = make_run.output()
    key = re.search(r"sk-gateway-\w+", banner).group(0)
    assert f"{url}/v1" in banner and "127.0.0.1:8000" not in banner

    client = OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)
    answer = client.chat.completions.create(model="deepseek-v4-flash", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content.startswith("[demo]")

    browser = requests.Session()
    assert f"{url}/v1" in browser.get(f"{url}/guide", timeout=10).text
    pricing = browser.get(f"{url}/", timeout=10).text
    buy = re.search(r'href="(/buy/\d+)"', pricing).group(1)
    form = browser.get(f"{url}{buy}", timeout=10).text
    plan_id = re.search(r'name="plan_id" value="(\d+)"', form).group(1)
    to_paypal = browser.post(
        f"{url}/checkout",
        data={"csrf_token": _CSRF.search(form).group(1), "plan_id": plan_id, "kind": "new", "email": "new@example.com"},
        allow_redirects=False,
        timeout=30,
    )
    assert to_paypal.status_code in (302, 303), to_paypal.text[:500]
    approval = to_paypal.headers["Location"]
    back = browser.post(approval, data={"action": "pay"}, allow_redirects=False, timeout=30)
    assert back.headers["Location"].startswith(f"{url}/checkout/return/")  # PayPal sends the buyer to port N

    order_page = browser.get(back.headers["Location"], timeout=30).text
    bought = re.search(r"sk-gateway-\w+", order_page).group(0)
    assert bought != key and f"{url}/v1" in order_page
    client = OpenAI(base_url=f"{url}/v1", api_key=bought, max_retries=0, timeout=30)
    assert client.chat.completions.create(model="deepseek-v4-flash", messages=[{"role": "user", "content": "x"}])
