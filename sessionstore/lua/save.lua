-- Apply one request's changes to a session, atomically, in one round trip.
-- Only the fields the request changed are sent, so two requests on two
-- replicas that change different keys of one session both survive.
--
-- The expiry (and with it the user index, which is scored by expiry) moves
-- only when it must: when the session is created, gets a new id or a new
-- user, changes lifetime, or has less than half of its lifetime left, as on
-- a read. An ordinary write is a handful of commands and leaves the index alone.
--
-- KEYS[1]  session key to write
-- KEYS[2]  session key as loaded (differs from KEYS[1] after regenerate())
-- ARGV[1]  'new' (never stored: create it) or 'update' (must still exist)
-- ARGV[2]  idle timeout (ms)      ARGV[3]  absolute timeout (ms)
-- ARGV[4]  user index key prefix
-- ARGV[5]  'keep' (user unchanged) or 'set' (user becomes ARGV[6]; '' = none)
-- ARGV[6]  user id
-- ARGV[7]  idle timeout of a permanent session (ms): Flask's PERMANENT_SESSION_LIFETIME
-- ARGV[8]  n, the number of fields to set; ARGV[9 .. 8+2n] field/value pairs;
--          the remaining arguments are fields to delete.
-- Returns {ttl, permanent, created}: ttl is the session's TTL in ms, 0 when the session
-- is gone: destroyed, rotated or expired meanwhile (nothing written: no
-- resurrection), -1 when this request's deletions left it without a single
-- value (it was deleted: an empty session is no session, as Flask drops the
-- cookie of one); permanent is 1 when the session is permanent; created is
-- when it was created (ms).
local key, old = KEYS[1], KEYS[2]
local mode = ARGV[1]
local idle, absolute = tonumber(ARGV[2]), tonumber(ARGV[3])
local index_prefix = ARGV[4]

local ttl = -1  -- the TTL it had before this write (none yet for a new one)
if mode == 'update' then
  ttl = redis.call('PTTL', old)
  if ttl == -2 then return {0, 0, 0} end
  if old ~= key then redis.call('RENAME', old, key) end  -- keeps the TTL
elseif redis.call('EXISTS', key) == 1 then
  -- A fresh 256-bit id that already exists: refuse rather than merge.
  return {0, 0, 0}
end

local now = now_ms()
local n = tonumber(ARGV[8])
local first_del = 9 + 2 * n
if mode == 'new' then redis.call('HSET', key, '!c', now) end
-- unpack() is bounded by Lua's stack: apply large change sets in chunks.
local chunk = 200
for i = 9, first_del - 1, 2 * chunk do
  redis.call('HSET', key, unpack(ARGV, i, math.min(i + 2 * chunk - 1, first_del - 1)))
end
for i = first_del, #ARGV, chunk do
  redis.call('HDEL', key, unpack(ARGV, i, math.min(i + chunk - 1, #ARGV)))
end
redis.call('HSET', key, '!a', now)

-- Flask's session.permanent is the '_permanent' key: its JSON is 'true'.
local meta = redis.call('HMGET', key, '!c', '_permanent', '!u')
local created = tonumber(meta[1]) or now
local permanent = meta[2] == 'true'
local prev_user = meta[3]
local lifetime = permanent and tonumber(ARGV[7]) or idle

local user = prev_user
if ARGV[5] == 'set' then
  user = ARGV[6] ~= '' and ARGV[6] or false
  if user ~= prev_user then
    if user then redis.call('HSET', key, '!u', user) else redis.call('HDEL', key, '!u') end
  end
end
local moved = old ~= key or user ~= prev_user
if prev_user and moved then
  redis.call('ZREM', index_prefix .. prev_user, old, key)
end

if first_del <= #ARGV then
  -- Values were deleted: is any left? (Fields starting with one '!' are metadata.)
  local empty = true
  for _, field in ipairs(redis.call('HKEYS', key)) do
    if string.sub(field, 1, 1) ~= '!' or string.sub(field, 2, 2) == '!' then
      empty = false
      break
    end
  end
  if empty then
    redis.call('DEL', key)
    if user then redis.call('ZREM', index_prefix .. user, key) end
    return {-1, 0, 0}
  end
end

local target = session_ttl(created, lifetime, absolute, now)
if target <= 0 then
  redis.call('DEL', key)
  if user then redis.call('ZREM', index_prefix .. user, key) end
  return {0, 0, 0}
end
-- (ttl > lifetime: the session stopped being permanent, so its expiry comes closer.)
if mode == 'new' or moved or ttl > lifetime or (ttl < lifetime / 2 and target > ttl) then
  redis.call('PEXPIRE', key, target)
  ttl = target
  if user then index_add(index_prefix .. user, key, now + ttl, now) end
end
return {ttl, permanent and 1 or 0, created}
