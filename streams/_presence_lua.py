"""The Redis scripts behind presence (streams/presence.py). Each runs atomically, which is what
makes a join or a leave announced exactly once whichever process runs it, crash cleanup
included.

Per file channel (all in the channel's hash tag, so one cluster slot): ``u`` user -> number of
processes holding it, ``c`` user -> connections over all processes, ``z`` users scored by the
time they arrived (ms), and ``p:<process>`` user -> that process's connections. Every call
touches the keys of one slot only: one file's keys, or the process registry alone.
"""

from __future__ import annotations

# KEYS: u, c, z, p:<process>. ARGV: pub/sub channel, full ("1": drop this process's users not
# listed), then pairs user, connections (-1: the user left this process). Publishes, when
# anyone arrived or left, "P" + {"j": [...], "l": [...], "n": count} on the channel's pub/sub
# channel (events start with "{", so the hub tells them apart by the first byte).
SYNC = """
local u, c, z, p = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local joined, left, listed = {}, {}, {}
local function drop(user)
  local old = redis.call('HGET', p, user)
  if not old then return end
  redis.call('HDEL', p, user)
  -- Never pass -0: Lua writes it as "-0", which HINCRBY refuses.
  local k = tonumber(old)
  if k ~= 0 then redis.call('HINCRBY', c, user, -k) end
  if redis.call('HINCRBY', u, user, -1) <= 0 then
    redis.call('HDEL', u, user)
    redis.call('HDEL', c, user)
    redis.call('ZREM', z, user)
    left[#left + 1] = user
  end
end
for i = 3, #ARGV, 2 do
  local user, n = ARGV[i], tonumber(ARGV[i + 1])
  listed[user] = true
  if n < 0 then
    drop(user)
  else
    local old = redis.call('HGET', p, user)
    if not old then
      redis.call('HINCRBY', u, user, 1)
      old = 0
    end
    redis.call('HSET', p, user, n)
    local d = n - tonumber(old)
    if d ~= 0 then redis.call('HINCRBY', c, user, d) end
    if not redis.call('ZSCORE', z, user) then
      redis.call('ZADD', z, now, user)
      joined[#joined + 1] = user
    end
  end
end
if ARGV[2] == '1' then
  for _, user in ipairs(redis.call('HKEYS', p)) do
    if not listed[user] then drop(user) end
  end
end
if #joined > 0 or #left > 0 then
  local n = redis.call('ZCARD', z)
  redis.call('PUBLISH', ARGV[1], 'P' .. cjson.encode({j = joined, l = left, n = n}))
end
return #joined + #left
"""

# On a Redis Cluster: the same, published on the file's shard channel (its slot is the keys'),
# where the hubs follow it with SSUBSCRIBE.
SHARDED_SYNC = SYNC.replace("'PUBLISH'", "'SPUBLISH'")

# KEYS: c, z. ARGV: how many users to list. Returns count, then user, since (ms), connections
# for the earliest arrivals.
SNAPSHOT = """
local n = redis.call('ZCARD', KEYS[2])
local top = redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
local out = {n}
for i = 1, #top, 2 do
  out[#out + 1] = top[i]
  out[#out + 1] = top[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[1], top[i]) or '0'
end
return out
"""

# KEYS: procs. ARGV: process, lease (ms), "1" if the process believes it is registered.
# Renews the lease in Redis time, unless it had already run out (then the process must take a
# new name: a reaper may be removing the old one's users); returns lost (0/1) and up to 16
# processes whose lease has run out.
RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prev = redis.call('ZSCORE', KEYS[1], ARGV[1])
local lost = 0
if ARGV[3] == '1' and ((not prev) or tonumber(prev) < now) then
  lost = 1
else
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
end
local out = {lost}
for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 16)) do
  if name ~= ARGV[1] then out[#out + 1] = name end
end
return out
"""

# KEYS: procs. ARGV: process. Forgets a process whose lease has run out (and only then).
FORGET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) < now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
"""
