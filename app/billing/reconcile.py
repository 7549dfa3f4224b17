"""Moving usage from the Redis outbox into SQL, and keeping the live balances honest.

drain(): the worker takes records from the outbox, writes them in batches (ledger.write_batch,
idempotent by request id) and then, in one script per batch, removes them from the outbox and from
the keys' pending and raises each key's synced to the tokens_used its transaction committed. A
worker killed anywhere in between leaves the records in the outbox; the next drain writes what SQL
lacks and skips what it has, so nothing is lost or counted twice.

reconcile(): first writes this machine's usage spool to SQL (records that reached neither Redis nor
SQL when their request ended, spool.py), drains, then for every key with live state compares Redis
with SQL and corrects drift: quota, synced (in both directions when nothing moved meanwhile, else
only up), pending (recomputed from the outbox), held (recomputed from the holds, with holds of
processes that died dropped, and holds of requests whose usage record is already in SQL: their
settlement never reached Redis, and the record is what they cost now, so they must not also stay
held), and forgets keys idle for a day, whose state is rebuilt from SQL on their next request.

What survives Redis losing its data (FLUSHALL, or a restart without persistence): everything SQL
has. Balances are rebuilt from it on each key's next request, and synced only ever rises to values
SQL had, so nothing is given away twice or taken twice. What does not survive: usage settled in
Redis but not yet drained to SQL at that moment (normally the last fraction of a second of traffic;
the outbox sits in the same Redis whatever CELERY_BROKER_URL says, and the Celery messages carry no
records, only "drain now"), and the reservations of requests running at that moment, which then
settle normally but were not held against the rebuilt balance. Redis with appendonly yes and
appendfsync everysec bounds the first to one second; a restore from an older snapshot is corrected
by the next drain and reconcile.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from flask import current_app
from sqlalchemy.exc import SQLAlchemyError

from app.billing import ledger, low_balance, quota, spool
from app.billing.scripts import INT, NOW, Script
from app.extensions import db, get_redis

log = logging.getLogger(__name__)

IDLE_MS = 86_400_000  # a key unused this long has its live state dropped (rebuilt on next use)
OUTBOX_SCAN_LIMIT = 20_000  # recompute pending from the outbox only while it is this small
_CHUNK = 100

# KEYS: outbox, dead letters, then the acct hash of each key index (0-based: KEYS[index + 3])
# ARGV: JSON {"r": [[request id, key index, billed, rejected 0/1], ...], "s": [[key index, tokens_used], ...]}
_ACK = Script(
    INT
    + """
local data = cjson.decode(ARGV[1])
local acked = 0
for _, r in ipairs(data.r) do
  local record = redis.call('HGET', KEYS[1], r[1])
  if record then
    redis.call('HDEL', KEYS[1], r[1])
    if r[3] ~= 0 then redis.call('HINCRBY', KEYS[r[2] + 3], 'pending', int(-r[3])) end
    if r[4] == 1 then redis.call('HSET', KEYS[2], r[1], record) end
    acked = acked + 1
  end
end
for _, s in ipairs(data.s) do
  local acct = KEYS[s[1] + 3]
  local synced = redis.call('HGET', acct, 'synced')
  if not synced or s[2] > tonumber(synced) then redis.call('HSET', acct, 'synced', int(s[2])) end
end
return acked
"""
)

# KEYS: outbox, live set, then per key: acct, quota, holds
# ARGV: JSON {"k": [[id, sql quota, sql used, qver seen before the SQL read, synced seen before it,
#                    [hold members of requests already recorded in SQL]], ...],
#             "ttl": quota cache seconds, "scan": 1 to recompute pending from the outbox, "idle": ms}
_FIX = Script(
    NOW
    + INT
    + """
local data = cjson.decode(ARGV[1])
local pending = nil
if data.scan == 1 then
  pending = {}
  for _, raw in ipairs(redis.call('HVALS', KEYS[1])) do
    local r = cjson.decode(raw)
    local id = tostring(r.api_key_id)
    pending[id] = (pending[id] or 0) + r.billed_tokens
  end
end
local fixes = {}
local function set(acct, field, old, new, id)
  table.insert(fixes, {id, field, tostring(old or ''), int(new)})
  redis.call('HSET', acct, field, int(new))
end
for i, k in ipairs(data.k) do
  local acct, qkey, holds = KEYS[3 * i], KEYS[3 * i + 1], KEYS[3 * i + 2]
  local id = int(k[1])
  redis.call('ZREMRANGEBYSCORE', holds, '-inf', now)
  for _, m in ipairs(k[6]) do redis.call('ZREM', holds, m) end
  local held = 0
  for _, m in ipairs(redis.call('ZRANGE', holds, 0, -1)) do
    held = held + tonumber(string.match(m, '|(%d+)$'))
  end
  local state = redis.call('HMGET', acct, 'held', 'pending', 'synced', 'qver', 'seen')
  if tonumber(state[1] or '0') ~= held then set(acct, 'held', state[1], held, id) end
  local owed = tonumber(state[2] or '0')
  if pending and owed ~= (pending[id] or 0) then
    set(acct, 'pending', state[2], pending[id] or 0, id)
    owed = pending[id] or 0
  end
  local synced = state[3]
  -- Unchanged since it was read before SQL: SQL is the truth, either way. Changed: only up.
  if (synced or '') == k[5] then
    if tonumber(synced or '-1') ~= k[3] then set(acct, 'synced', synced, k[3], id) end
  elseif not synced or tonumber(synced) < k[3] then
    set(acct, 'synced', synced, k[3], id)
  end
  local cached = redis.call('GET', qkey)
  if (state[4] or '0') == k[4] and cached and tonumber(cached) ~= k[2] then
    table.insert(fixes, {id, 'quota', cached, int(k[2])})
    if data.ttl > 0 then redis.call('SET', qkey, int(k[2]), 'EX', data.ttl) else redis.call('SET', qkey, int(k[2])) end
  end
  if held == 0 and owed == 0 and tonumber(state[5] or '0') < now - data.idle then
    redis.call('DEL', acct, qkey)
    redis.call('SREM', KEYS[2], id)
  end
end
return cjson.encode(fixes)
"""
)


def drain_outbox() -> int:
    """The usage.drain job: move every queued usage record into SQL. Returns how many were handled."""
    config = current_app.config
    return drain(get_redis(), config["BILLING_REDIS_PREFIX"], config["USAGE_DRAIN_BATCH"])


def reconcile() -> dict[str, int]:
    """The usage.reconcile job (Celery beat): replay this machine's spool, drain, then correct every
    live balance from SQL."""
    config = current_app.config
    _replay_spool()
    drained = drain_outbox()
    fixes = reconcile_live(get_redis(), config["BILLING_REDIS_PREFIX"], quota.live_ttl(config))
    for key_id, field, old, new in fixes:
        log.warning("reconcile corrected key %s: %s was %s, now %s", key_id, field, old, new)
    return {"drained": drained, "corrected": len(fixes)}


def _replay_spool() -> None:
    try:
        replayed = spool.replay_spool()
    except OSError:
        log.exception("the usage spool in %s cannot be read", current_app.config["USAGE_SPOOL_DIR"])
        return
    if replayed.files:
        log.warning("usage spool: %d records from %d files written to SQL", replayed.written, len(replayed.files))


def drain(redis: Any, prefix: str, batch_size: int, limit: int = 100_000) -> int:
    """Write outbox records to SQL in batches and acknowledge them, until the outbox is empty
    (or `limit` records were handled; the next kick or the beat does the rest)."""
    outbox = quota.outbox_key(prefix)
    handled, cursor = 0, 0
    while handled < limit:
        cursor, entries = redis.hscan(outbox, cursor, count=batch_size)
        if entries:
            _write_and_ack(redis, prefix, entries)
            handled += len(entries)
        if cursor == 0 and (not entries or not redis.hlen(outbox)):
            break
    return handled


def _write_and_ack(redis: Any, prefix: str, entries: dict[bytes, bytes]) -> None:
    records, broken = [], {}
    for request_id, raw in entries.items():
        try:
            records.append(json.loads(raw))
        except ValueError:
            broken[request_id] = raw
    if broken:  # not JSON, so no key to charge: set aside for a human
        _set_aside(redis, prefix, broken)
    if not records:
        return
    result = ledger.write_batch(records)
    db.session.rollback()  # end the read of tokens_used; the next batch must see fresh values
    for request_id in result.rejected:
        log.error("usage record %s cannot be written to SQL; kept in %s", request_id, quota.dead_letter_key(prefix))
    _ack(redis, prefix, records, result)
    _alert_low_balances(result.used)


def _alert_low_balances(key_ids: Iterable[int]) -> None:
    # Here, where the usage has just reached SQL, rather than in the relay: no SQL or mail on the
    # request path. A failure only delays the alert to the key's next drain, never the usage.
    try:
        low_balance.alert_low_keys(key_ids)
    except SQLAlchemyError:
        db.session.rollback()
        log.warning("low-balance alerts not checked for this batch", exc_info=True)


def _ack(redis: Any, prefix: str, records: Sequence[dict[str, Any]], result: ledger.BatchResult) -> None:
    key_ids = sorted({r["api_key_id"] for r in records} | set(result.used))
    index = {key_id: i for i, key_id in enumerate(key_ids)}
    rejected = set(result.rejected)
    payload = {
        "r": [
            [r["request_id"], index[r["api_key_id"]], r["billed_tokens"], int(r["request_id"] in rejected)]
            for r in records
        ],
        "s": [[index[key_id], used] for key_id, used in result.used.items()],
    }
    keys = [quota.outbox_key(prefix), quota.dead_letter_key(prefix)] + [quota.acct_key(prefix, k) for k in key_ids]
    _ACK(redis, keys, [json.dumps(payload)])


def _set_aside(redis: Any, prefix: str, broken: dict[bytes, bytes]) -> None:
    log.error("%d usage records in the outbox are not JSON; moved to %s", len(broken), quota.dead_letter_key(prefix))
    pipe = redis.pipeline()
    pipe.hset(quota.dead_letter_key(prefix), mapping=broken)
    pipe.hdel(quota.outbox_key(prefix), *broken)
    pipe.execute()


def reconcile_live(redis: Any, prefix: str, cache_seconds: int) -> list[tuple[int, str, str, int]]:
    """Correct the live state of every key that has one. Returns (key id, field, was, now) per fix."""
    ids = sorted(int(k) for k in redis.smembers(quota.live_set_key(prefix)))
    scan = int(redis.hlen(quota.outbox_key(prefix)) <= OUTBOX_SCAN_LIMIT)
    fixes: list[tuple[int, str, str, int]] = []
    for chunk in _chunks(ids, _CHUNK):
        fixes += _reconcile_chunk(redis, prefix, chunk, cache_seconds, scan)
    return fixes


def _reconcile_chunk(
    redis: Any, prefix: str, key_ids: list[int], cache_seconds: int, scan: int
) -> list[tuple[int, str, str, int]]:
    # Redis first, then SQL: a value that did not move between the two reads may be overwritten.
    pipe = redis.pipeline(transaction=False)
    for key_id in key_ids:
        pipe.hmget(quota.acct_key(prefix, key_id), "qver", "synced")
        pipe.zrange(quota.holds_key(prefix, key_id), 0, -1)
    replies = pipe.execute()
    seen = dict(zip(key_ids, replies[::2], strict=True))
    holds = {key_id: [m.decode() for m in members] for key_id, members in zip(key_ids, replies[1::2], strict=True)}
    totals = ledger.key_totals(key_ids)
    recorded = ledger.recorded(m.rpartition("|")[0] for members in holds.values() for m in members)
    db.session.rollback()
    gone = [k for k in key_ids if k not in totals]
    if gone:
        redis.srem(quota.live_set_key(prefix), *gone)
    present = [k for k in key_ids if k in totals]
    if not present:
        return []
    keys = [quota.outbox_key(prefix), quota.live_set_key(prefix)]
    rows = []
    for key_id in present:
        keys += [quota.acct_key(prefix, key_id), quota.quota_key(prefix, key_id), quota.holds_key(prefix, key_id)]
        qver, synced = seen[key_id]
        settled = [m for m in holds[key_id] if m.rpartition("|")[0] in recorded]
        rows.append([key_id, *totals[key_id], _text(qver, "0"), _text(synced, ""), settled])
    payload = {"k": rows, "ttl": cache_seconds, "scan": scan, "idle": IDLE_MS}
    reply = json.loads(_FIX(redis, keys, [json.dumps(payload)]))
    return [(int(k), field, old, int(new)) for k, field, old, new in reply or []]


def _text(value: bytes | None, default: str) -> str:
    return value.decode() if value is not None else default


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
