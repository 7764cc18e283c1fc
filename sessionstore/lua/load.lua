-- Load a session in one round trip, when the read must also write. An
-- ordinary read is no script at all: SessionStore.load pipelines HGETALL and
-- PTTL, and runs this only when that PTTL says the idle TTL is due to be
-- pushed back (less than half of it left; checked again here, atomically) or
-- when the session may be under an old secret's key. A primary that refuses
-- writes (min-replicas-to-write, no replica in sync) still serves the
-- session: the push is skipped and tried again on a later read.
--
-- KEYS[1]  session key (under the current secret)
-- KEYS[2..] where the session would be under old secrets (a key rotation):
--          only passed once KEYS[1] was found empty. A session found there
--          is moved to KEYS[1], so the next request finds it at once.
-- ARGV[1]  idle timeout (ms)
-- ARGV[2]  absolute timeout (ms)
-- ARGV[3]  user index key prefix (the user id is appended)
-- ARGV[4]  idle timeout of a permanent session (ms); 0: reads never push it back
-- Returns nil when there is no such session, else its flat field/value list.
local key = KEYS[1]
local index_prefix = ARGV[3]
local fields = redis.call('HGETALL', key)
if #fields == 0 then
  for i = 2, #KEYS do
    fields = redis.call('HGETALL', KEYS[i])
    if #fields > 0 then
      redis.call('RENAME', KEYS[i], key)  -- keeps its TTL
      local user = redis.call('HGET', key, '!u')
      if user then
        local index = index_prefix .. user
        local expires = redis.call('ZSCORE', index, KEYS[i])
        redis.call('ZREM', index, KEYS[i])
        if expires then redis.call('ZADD', index, expires, key) end
      end
      break
    end
  end
  if #fields == 0 then return false end
end

-- One pass over what HGETALL returned (no extra command on the read path).
-- Flask's session.permanent is the '_permanent' key: its JSON is 'true'.
local created, user, permanent
for i = 1, #fields, 2 do
  local field = fields[i]
  if field == '!c' then created = tonumber(fields[i + 1])
  elseif field == '!u' then user = fields[i + 1]
  elseif field == '_permanent' then permanent = fields[i + 1] == 'true' end
end
local idle, absolute = tonumber(ARGV[1]), tonumber(ARGV[2])
if permanent then idle = tonumber(ARGV[4]) end
local ttl = redis.call('PTTL', key)
if ttl >= 0 and ttl < idle / 2 then
  local now = now_ms()
  local new_ttl = session_ttl(created or now, idle, absolute, now)
  if new_ttl > ttl and type(redis.pcall('PEXPIRE', key, new_ttl)) == 'number' then
    redis.call('HSET', key, '!a', now)
    if user then index_add(index_prefix .. user, key, now + new_ttl, now) end
  end
end
return fields
