-- Prepended to every sessionstore script (Redis 7 scripts cannot share code).
-- Time always comes from the Redis server, so replicas with skewed clocks
-- agree on when a session was created and when it expires.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- TTL for a session created at `created`: the idle timeout, cut short by the
-- absolute limit.
local function session_ttl(created, idle, absolute, now)
  return math.min(idle, created + absolute - now)
end

-- Record `member` in a user's index, scored by its expiry; drop members that
-- have expired; let the index itself expire with its longest-lived member so
-- an abandoned user's index does not outlive their sessions.
local function index_add(index, member, expires, now)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
  redis.call('ZADD', index, expires, member)
  local last = redis.call('ZRANGE', index, -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', index, tonumber(last[2]))
end
