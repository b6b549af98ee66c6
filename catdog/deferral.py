"""Deferred tasks wait in Redis, not in a worker: no long ETAs, no visibility-timeout trap.

A task that may not start yet (outside its window, or over its rate limit) is taken off its queue
and kept, as the very message it was, in the sorted set ``catdog:deferred`` scored by the time it
is due. Workers move due messages back to the tail of their queue with one atomic Lua script (so
each is moved once, and none is lost if a worker dies), ringing the queue's bell
(catdog/transport.py): at the due time of the next one, and every 10 s besides (a worker that
deferred something wakes its own mover at once, so a message another worker deferred waits at
most that long after it is due only if that worker is gone).
The script looks at the set's first member before anything else: with nothing due it costs the
broker two commands (``EVALSHA``, ``ZRANGE``), three with something waiting. A deferred task
holds no worker slot and no unacknowledged message, however long it waits (celery/kombu#337 is
what happens otherwise: an ETA held past the visibility timeout is delivered again and again).
"""

from __future__ import annotations

import redis

from catdog.redis_scripts import RING_LUA

DEFERRED_KEY = "catdog:deferred"
MOVE_BATCH = 500

# KEYS[1]: the deferred set; ARGV[1]: how many at most. Members are "<list key>\n<message>".
# Returns how many moved and the due time of the next one ('' when none).
MOVE_DUE = RING_LUA + """
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if not first[2] then return {0, ''} end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if tonumber(first[2]) > now then return {0, first[2]} end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  local cut = string.find(member, '\\n', 1, true)
  redis.call('LPUSH', string.sub(member, 1, cut - 1), string.sub(member, cut + 1))
  ring(string.sub(member, 1, cut - 1))
  redis.call('ZREM', KEYS[1], member)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {#due, nxt[2] or ''}
"""


def member(list_key: str, message: str) -> str:
    return f"{list_key}\n{message}"


class Deferrals:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._move = client.register_script(MOVE_DUE)

    def add(self, list_key: str, message: str, due: float) -> None:
        """Keep ``message`` until ``due`` (epoch seconds), then push it onto ``list_key``."""
        self.client.zadd(DEFERRED_KEY, {member(list_key, message): due})

    def move_due(self) -> tuple[int, float | None]:
        """Move every due message back to its queue: how many moved, and when the next is due."""
        moved, next_due = self._move(keys=[DEFERRED_KEY], args=[MOVE_BATCH])
        return int(moved), (float(next_due) if next_due else None)

    def waiting(self) -> int:
        return int(self.client.zcard(DEFERRED_KEY))
