"""The least a gateway on Flask, gevent and gunicorn can do per request, for bench/stack_floor.py.

FLOOR_MODE picks how much of a metered relay it does, with no gateway logic at all:

- `flask`: parse the JSON body and answer a canned completion.
- `upstream`: the same, plus one POST to the upstream through the relay's HTTP client, whose
  answer is passed on as it is.
- `upstream+redis2`: plus the two Redis round trips a metered request cannot do without (the
  admission script and the settlement script, each trivial), as RelayGate does for a known key.
- `upstream+redis3`: plus a third, the key look-up's MGET, as RelayGate did for every request
  before 803ebcd (and still does for a key's first request in a process).
"""

from __future__ import annotations

import os

import redis
from flask import Flask, Response, request

from app import gevent_send
from app.relay import http1, jsonbytes

gevent_send.install()  # as wsgi.py does for RelayGate: the same socket writes on both sides

MODE = os.environ.get("FLOOR_MODE", "flask")
UPSTREAM = os.environ.get("FLOOR_UPSTREAM", "")
HEADERS = {"Authorization": f"Bearer {os.environ.get('FLOOR_UPSTREAM_KEY', '')}", "Content-Type": "application/json"}
CANNED = jsonbytes.dumps({"id": "floor", "object": "chat.completion", "choices": [], "usage": {"total_tokens": 1}})

app = Flask(__name__)
pool = http1.Pool(1000)
client = redis.Redis.from_url(os.environ.get("FLOOR_REDIS_URL", "redis://127.0.0.1:6379/8"))
script = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")


@app.post("/v1/chat/completions")
def chat() -> Response:
    body = jsonbytes.loads(request.get_data(cache=False))
    if MODE == "flask":
        return Response(CANNED, mimetype="application/json")
    if MODE == "upstream+redis3":
        client.mget(["floor:key", "floor:generation", "floor:epoch"])
    if MODE.startswith("upstream+redis"):
        script(keys=["floor:held"], args=[1])
    answer = pool.post(UPSTREAM, HEADERS, jsonbytes.dumps(body), 10, 30)
    data = answer.read()
    answer.release()
    if MODE.startswith("upstream+redis"):
        script(keys=["floor:used"], args=[1])
    return Response(data, mimetype="application/json")
