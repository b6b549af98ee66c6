"""The scripts CatDog's transport (:mod:`catdog.transport`) runs in Redis, and the keys they share.

- *bells* ``catdog.bell:<queue>``: a token pushed with each message put back on a queue (a
  restore, a deferral come due, a hand-on); a worker waiting for work wakes on it and takes;
- *waiting sets* ``catdog.waiting:<queue>``: the workers waiting for work on the queue, each by
  its inbox, scored with the time (Redis's clock) it began to wait; a take that finds nothing
  puts its worker in the waiting sets of all its queues, with a registration
  (``<inbox>:waits``) that expires when its wait ends unless its next take finds nothing
  again; a take that returns a message takes the worker out. A worker lost while it waits is
  passed over once its registration has expired;
- *inboxes* ``catdog.inbox:<id>``: one per consuming channel. A publish through CatDog's
  transport hands the message to the worker that has waited longest on its queue, recorded as
  held for that worker (kombu's ``unacked`` record, and the quarantine's first-delivery record)
  in the same step, and pushes it on that worker's inbox, where the worker's wait (``BLPOP``)
  receives it: the message reaches a waiting worker in the wake-up itself. With nobody waiting
  the message goes on its queue's list, as kombu's publish puts it.
"""

from __future__ import annotations

import hashlib
from typing import Any

BELL_PREFIX = "catdog.bell:"
WAITING_PREFIX = "catdog.waiting:"
INBOX_PREFIX = "catdog.inbox:"
#: a worker's registration (hash) is its inbox's name and this
REGISTRATION_SUFFIX = ":waits"
#: what a channel pushes on its own inbox to end its wait (it consumes a queue more, say)
WAKE = "-"
BELL_CAP = 64


def bell(queue: str) -> str:
    """The key whose tokens wake the workers waiting on ``queue``."""
    return f"{BELL_PREFIX}{queue}"


def waiting(queue: str) -> str:
    """The sorted set of the workers waiting for work on ``queue``."""
    return f"{WAITING_PREFIX}{queue}"


def ring(pipe: Any, queue: str) -> None:
    """Add, to ``pipe`` (a Redis pipeline), the wake-up of ``queue``'s waiting workers."""
    pipe.lpush(bell(queue), 1)
    pipe.ltrim(bell(queue), 0, BELL_CAP - 1)


#: Lua that defines ``ring(list)``: the wake-up of the queue whose priority list is ``list``
#: (``<queue>`` or ``<queue>:<priority>``), for scripts that push messages themselves.
RING_LUA = f"""
local function ring(list)
  local bell = '{BELL_PREFIX}' .. (string.gsub(list, ':%d$', ''))
  redis.call('LPUSH', bell, 1)
  redis.call('LTRIM', bell, 0, {BELL_CAP - 1})
end
"""

#: Lua: ``now()`` (Redis's clock, in seconds) and ``leave(inbox)``: the worker of ``inbox`` no
#: longer waits (out of every waiting set it is in; its registration removed).
_WAITING = f"""
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function leave(inbox)
  local reg = inbox .. '{REGISTRATION_SUFFIX}'
  local sets = redis.call('HGET', reg, 'q')
  if sets then
    for set in string.gmatch(sets, '[^\\n]+') do redis.call('ZREM', set, inbox) end
    redis.call('DEL', reg)
  end
  return reg
end
"""

#: Lua that writes the results carried (:mod:`catdog.carry`) from ARGV[at]: for each, key, value
#: and expiry in seconds (0: none); a result already ``SUCCESS`` is kept (Celery's rule); each
#: written is published, as Celery's backend does. Returns the next ARGV index.
_RESULTS = """
local function results(at, count)
  for _ = 1, count do
    local key, value, ttl = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
    at = at + 3
    local kept = false
    local current = redis.call('GET', key)
    if current then
      local ok, meta = pcall(cjson.decode, current)
      kept = ok and type(meta) == 'table' and meta['status'] == 'SUCCESS'
    end
    if not kept then
      if ttl > 0 then redis.call('SET', key, value, 'EX', ttl) else redis.call('SET', key, value) end
      redis.call('PUBLISH', key, value)
    end
  end
  return at
end
"""

#: KEYS: none; ARGV[1]: how many results, then the results (see _RESULTS).
STORE = _RESULTS + "results(2, tonumber(ARGV[1]))\nreturn 1\n"

#: How a handed message sits in an inbox: '1' when its first-delivery record was written, else
#: '0'; its queue's list; a newline; the message.
#:
#: KEYS: the unacked hash, its index, then the queue lists in the order to try them. ARGV[1]:
#: now (the index's score, in seconds, as kombu writes it); ARGV[2], ARGV[3]: how many results
#: and acknowledgements come first; ARGV[4..6]: the first delivery's record (key prefix, '' for
#: none; its JSON up to the start time; its expiry, see :class:`catdog.carry.Starts`); ARGV[7]:
#: the worker's inbox ('' for none), ARGV[8]: how long it waits (ms), ARGV[9]: '1' when it is
#: in these waiting sets already (its last take found nothing), ARGV[10]: how many waiting sets
#: follow, then those sets (those of the queues whose messages it holds); then the results
#: (written first), the acknowledgements' delivery tags (removed next), and for each list '1'
#: when its messages are held until acknowledged, '0' for a consumer without acks.
#:
#: A message handed to the worker's inbox meanwhile comes first; a take that returns a message
#: takes its worker out of the waiting sets. Nothing is written before the first write Redis
#: may refuse (out of memory): a refused take changed nothing.
#: Returns {list, message, held, started}: held 1 when the hold was recorded (0 for a message
#: this script cannot read: kombu's QoS records it, as it would have), started 1 when the first
#: delivery's record was written; false when all lists are empty, and then the worker is in
#: the waiting sets, its registration kept until its wait ends (its expiry). Idle, it costs
#: its registration's new expiry (which says nothing was handed to it) and one ``EXISTS`` of
#: all the lists.
#: The message is read (LINDEX) and its hold written before it is popped: a write Redis
#: refuses (out of memory under ``noeviction``) fails the script with the message queued.
TAKE = _RESULTS + _WAITING + """
local inbox, nsets = ARGV[7], tonumber(ARGV[10])
local at = results(11 + nsets, tonumber(ARGV[2]))
local acks = tonumber(ARGV[3])
for j = at, at + acks - 1 do
  redis.call('ZREM', KEYS[2], ARGV[j])
  redis.call('HDEL', KEYS[1], ARGV[j])
end
at = at + acks - 3
local function quit()  -- the worker takes: it waits no more
  if inbox ~= '' then return leave(inbox) end
  return ''
end
local reg = inbox .. '""" + REGISTRATION_SUFFIX + """'
if inbox ~= '' and ARGV[9] == '1' and redis.call('PEXPIRE', reg, ARGV[8]) == 1 then
  -- it still waits, so nothing was handed to it (a hand-over ends the registration)
  if redis.call('EXISTS', unpack(KEYS, 3)) == 0 then return false end
elseif inbox ~= '' and redis.call('LINDEX', inbox, -1) then
  quit()
  local handed = redis.call('RPOP', inbox)
  if handed ~= '""" + WAKE + """' then  -- (a wake-up its wait did not read: nothing)
    local nl = string.find(handed, '\\n', 1, true)
    return {string.sub(handed, 2, nl - 1), string.sub(handed, nl + 1), 1,
            tonumber(string.sub(handed, 1, 1))}
  end
end
local function wait()
  if inbox == '' or nsets == 0 then return false end
  if ARGV[9] == '1' and redis.call('PEXPIRE', reg, ARGV[8]) == 1 then return false end
  quit()
  local since, sets = now(), {}
  for k = 11, 10 + nsets do
    redis.call('ZADD', ARGV[k], since, inbox)
    sets[#sets + 1] = ARGV[k]
  end
  redis.call('HSET', reg, 'q', table.concat(sets, '\\n'), 'u', KEYS[1], 'i', KEYS[2],
             'p', ARGV[4], 'h', ARGV[5], 't', ARGV[6])
  redis.call('PEXPIRE', reg, ARGV[8])
  return false
end
if redis.call('EXISTS', unpack(KEYS, 3)) == 0 then return wait() end
local function truthy(value) return value and value ~= cjson.null end
for i = 3, #KEYS do
  local item = redis.call('LINDEX', KEYS[i], -1)
  if item then
    local recorded, started = 0, 0
    local ok, message = pcall(cjson.decode, item)
    ok = ok and type(message) == 'table' and type(message['properties']) == 'table'
    if ARGV[at + i] == '1' and ok then
      local props = message['properties']
      local tag, info = props['delivery_tag'], props['delivery_info']
      if type(tag) == 'string' and type(info) == 'table' then
        redis.call('ZADD', KEYS[2], ARGV[1], tag)
        redis.call('HSET', KEYS[1], tag, '[' .. item .. ',' .. cjson.encode(info['exchange'])
                   .. ',' .. cjson.encode(info['routing_key']) .. ']')
        recorded = 1
        local headers = message['headers']
        local again = truthy(info['redelivered']) or
                      (type(headers) == 'table' and truthy(headers['redelivered']))
        if ARGV[4] ~= '' and not again and
           redis.call('SET', ARGV[4] .. tag, ARGV[5] .. ARGV[1] .. '}}', 'NX', 'EX', ARGV[6]) then
          started = 1
        end
      end
    end
    quit()
    redis.call('RPOP', KEYS[i])
    return {KEYS[i], item, recorded, started}
  end
end
return wait()
"""

#: KEYS: the message's list, its queue's waiting set, its queue's bell. ARGV: the message, its
#: delivery tag, its exchange and routing key (JSON strings, for the hold's record), how long
#: an inbox is kept (s). The message is handed to the worker that has waited longest (its
#: hold, and its first-delivery record when the worker asked for one, written as its take
#: would write them; it leaves every waiting set), else pushed on the list with a bell.
#: Returns 1 when handed, 0 when queued.
PUT = _WAITING + f"""
for _ = 1, 8 do
  local inbox = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not inbox then break end
  local w = redis.call('HMGET', inbox .. '{REGISTRATION_SUFFIX}', 'u', 'i', 'p', 'h', 't')
  if not w[1] then
    redis.call('ZREM', KEYS[2], inbox)  -- its wait lapsed (its worker lost, say)
  else
    leave(inbox)
    local at = now()
    redis.call('ZADD', w[2], at, ARGV[2])
    redis.call('HSET', w[1], ARGV[2], '[' .. ARGV[1] .. ',' .. ARGV[3] .. ',' .. ARGV[4] .. ']')
    local started = '0'
    if w[3] ~= '' and redis.call('SET', w[3] .. ARGV[2], w[4] .. at .. '}}}}', 'NX',
                                 'EX', w[5]) then
      started = '1'
    end
    redis.call('LPUSH', inbox, started .. KEYS[1] .. '\\n' .. ARGV[1])
    redis.call('EXPIRE', inbox, ARGV[5])
    return 1
  end
end
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[3], 1)
redis.call('LTRIM', KEYS[3], 0, {BELL_CAP - 1})
return 0
"""

#: ARGV[1]: an inbox whose channel closes: it leaves the waiting sets; returns (and removes)
#: what was handed to it meanwhile, for its channel to put back.
UNWAIT = _WAITING + """
leave(ARGV[1])
local handed = redis.call('LRANGE', ARGV[1], 0, -1)
redis.call('DEL', ARGV[1])
return handed
"""


def handed_entry(item: Any) -> tuple[str, bytes, int, int]:
    """An inbox's entry (see :data:`catdog.redis_scripts.TAKE`) as a take's reply."""
    raw = item if isinstance(item, bytes) else str(item).encode()
    head, message = raw.split(b"\n", 1)
    return head[1:].decode(), message, 1, int(head[:1])


def sha(script: str) -> str:
    """The name Redis caches ``script`` under (``EVALSHA`` sends this, not the script)."""
    return hashlib.sha1(script.encode()).hexdigest()


TAKE_SHA = sha(TAKE)
PUT_SHA = sha(PUT)
