"""Fleet-wide rate limits: at most N task starts in any rolling period, across every device.

One Redis sorted set per limit holds the start times of the last period. A Lua script, atomic in
Redis and on Redis's own clock (so devices' clock skew does not matter), drops the starts older
than the period and then either records this start or answers when the next one may happen
(the oldest start plus the period). ``N/s`` therefore means at most N starts in any rolling second.
"""

from __future__ import annotations

import uuid

import redis

from catdog.inventory import Limit

KEY_PREFIX = "catdog:limit:"

# KEYS[1]: the limit's starts; ARGV: count, period (s), member
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local count, period = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
if redis.call('ZCARD', KEYS[1]) < count then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(period * 1000) + 1000)
  return {1, tostring(now)}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, tostring(tonumber(oldest[2]) + period)}
"""


def key(name: str) -> str:
    return f"{KEY_PREFIX}{name}"


class Limiter:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._acquire = client.register_script(ACQUIRE)

    def acquire(self, limit: Limit, member: str | None = None) -> tuple[bool, float]:
        """``(True, now)`` and the start is counted, or ``(False, when)``: the epoch time (Redis's
        clock) at which a start may next be allowed."""
        allowed, when = self._acquire(keys=[key(limit.name)],
                                      args=[limit.count, limit.period_s, member or uuid.uuid4().hex])
        return bool(int(allowed)), float(when)
