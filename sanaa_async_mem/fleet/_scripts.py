"""The fleet budget's server-side Lua scripts: every change of the shared state is one atomic script.

Keys of a budget (all under one hash tag, so a Redis Cluster keeps them on one slot)::

    <prefix>:{<name>}:holders   ZSET  holder -> expiry (ms, Redis server clock)
    <prefix>:{<name>}:held      HASH  holder -> leases it holds
    <prefix>:{<name>}:queue     ZSET  ticket -> arrival number (the waiting line, oldest first)
    <prefix>:{<name>}:tickets   HASH  ticket -> expiry (ms): a ticket not polled for ``ttl`` is dropped
    <prefix>:{<name>}:seq       STRING the arrival counter
    <prefix>:{<name>}:meta      HASH  created (ms), recover_until (ms)

A ticket is ``<holder>|<n>``: one per lease a process waits for. Every script starts by reaping: holders
whose expiry passed lose their record, their leases and their tickets (that is how a process killed with
SIGKILL gives its leases back: within ``ttl`` of its last heartbeat, and never before), and tickets not
polled for ``ttl`` leave the line. Times come from the Redis server (``TIME``), so the processes' clocks
do not matter.

Every script returns the fleet figures after it: leases held in the fleet, tickets waiting, tickets
waiting that belong to other holders, active holders (holding or waiting), whether the budget is in its
recovery window, and the calling holder's own count.
"""

from __future__ import annotations

import dataclasses
import hashlib

__all__ = ["ACQUIRE", "LEAVE", "SYNC", "Script", "keys_for"]

_KEY_PARTS = ("holders", "held", "queue", "tickets", "seq", "meta")


def keys_for(prefix: str, name: str) -> list[str]:
    """The six keys of budget ``name`` (see the module documentation), in the order the scripts use."""
    return [f"{prefix}:{{{name}}}:{part}" for part in _KEY_PARTS]


@dataclasses.dataclass(frozen=True, slots=True)
class Script:
    """A Lua script and its SHA1 (what EVALSHA names it by)."""

    name: str
    source: str
    sha: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


_PRELUDE = """
local holders, held, queue, tickets, seq, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function owner(ticket)
  return string.match(ticket, '^(.*)|')
end

-- Reap: holders past their expiry lose their leases and tickets; tickets not polled for ttl go.
local dead = {}
for _, h in ipairs(redis.call('ZRANGEBYSCORE', holders, '-inf', now)) do
  dead[h] = true
  redis.call('HDEL', held, h)
  redis.call('ZREM', holders, h)
end
local tk = redis.call('HGETALL', tickets)
for i = 1, #tk, 2 do
  if tonumber(tk[i + 1]) <= now or dead[owner(tk[i])] then
    redis.call('HDEL', tickets, tk[i])
    redis.call('ZREM', queue, tk[i])
  end
end
-- A held count without a holder record (never happens through these scripts) would leak forever.
local hv = redis.call('HKEYS', held)
for _, h in ipairs(hv) do
  if not redis.call('ZSCORE', holders, h) then redis.call('HDEL', held, h) end
end

local function used_leases()
  local used = 0
  local all = redis.call('HVALS', held)
  for _, n in ipairs(all) do used = used + tonumber(n) end
  return used
end

local function recovering()
  local until_ms = tonumber(redis.call('HGET', meta, 'recover_until') or '0')
  return until_ms > now
end

local function figures(me)
  local used, nactive = 0, 0
  local active = {}
  local all = redis.call('HGETALL', held)
  for i = 1, #all, 2 do
    local n = tonumber(all[i + 1])
    used = used + n
    if n > 0 and not active[all[i]] then active[all[i]] = true; nactive = nactive + 1 end
  end
  local waiting, others = 0, 0
  for _, ticket in ipairs(redis.call('ZRANGE', queue, 0, -1)) do
    waiting = waiting + 1
    local o = owner(ticket)
    if o ~= me then others = others + 1 end
    if o and not active[o] then active[o] = true; nactive = nactive + 1 end
  end
  local mine = tonumber(redis.call('HGET', held, me) or '0')
  return {used, waiting, others, nactive, recovering() and 1 or 0, mine}
end
"""

#: ACQUIRE(keys; holder, total, ttl_ms, n_cancel, cancelled tickets..., wanted tickets...)
#: Refreshes the holder, drops its cancelled tickets, puts its wanted tickets in line (keeping the place
#: of those already there), then grants the wanted tickets among the first ``total - used`` of the line.
#: Returns {granted tickets, figures...}. Nothing is granted during the recovery window.
ACQUIRE = Script(
    "acquire",
    _PRELUDE
    + """
local me, total, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local ncancel = tonumber(ARGV[4])
redis.call('ZADD', holders, now + ttl, me)
if not redis.call('HGET', held, me) then redis.call('HSET', held, me, 0) end
if redis.call('EXISTS', meta) == 0 then redis.call('HSET', meta, 'created', now) end
for i = 5, 4 + ncancel do
  redis.call('ZREM', queue, ARGV[i])
  redis.call('HDEL', tickets, ARGV[i])
end
local wanted = {}
for i = 5 + ncancel, #ARGV do
  local ticket = ARGV[i]
  wanted[ticket] = true
  if not redis.call('ZSCORE', queue, ticket) then
    redis.call('ZADD', queue, redis.call('INCR', seq), ticket)
  end
  redis.call('HSET', tickets, ticket, now + ttl)
end
local granted = {}
if not recovering() then
  local free = total - used_leases()
  if free > 0 then
    for _, ticket in ipairs(redis.call('ZRANGE', queue, 0, free - 1)) do
      if wanted[ticket] then
        granted[#granted + 1] = ticket
        redis.call('ZREM', queue, ticket)
        redis.call('HDEL', tickets, ticket)
        redis.call('HINCRBY', held, me, 1)
      end
    end
  end
end
local out = figures(me)
table.insert(out, 1, granted)
return out
""",
)

#: SYNC(keys; holder, ttl_ms, held, rejoin) -- the heartbeat, and how leases are given back: the holder's
#: record is refreshed and its count set to what the process holds (the process's own count is the
#: truth; this also reconciles a grant whose reply was lost). ``rejoin=1`` after an outage: if the
#: budget's state is gone (Redis restarted empty), open a recovery window of ``ttl`` during which nothing
#: is granted, so every live holder re-registers its leases before anyone is given new ones.
#: Returns {figures...}.
SYNC = Script(
    "sync",
    _PRELUDE
    + """
local me, ttl, count, rejoin = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
if redis.call('EXISTS', meta) == 0 then
  if rejoin == '1' then
    redis.call('HSET', meta, 'created', now, 'recover_until', now + ttl)
  else
    redis.call('HSET', meta, 'created', now)
  end
end
redis.call('ZADD', holders, now + ttl, me)
redis.call('HSET', held, me, count)
return figures(me)
""",
)

#: LEAVE(keys; holder) -- a process that stops gives back everything: record, leases, tickets.
LEAVE = Script(
    "leave",
    _PRELUDE
    + """
local me = ARGV[1]
redis.call('ZREM', holders, me)
redis.call('HDEL', held, me)
for _, ticket in ipairs(redis.call('HKEYS', tickets)) do
  if owner(ticket) == me then
    redis.call('HDEL', tickets, ticket)
    redis.call('ZREM', queue, ticket)
  end
end
return figures(me)
""",
)
