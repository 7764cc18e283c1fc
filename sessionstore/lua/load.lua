-- Load a session in one round trip. The idle TTL is pushed back only when
-- less than half of it remains, so most reads write nothing at all.
--
-- KEYS[1]  session key
-- ARGV[1]  idle timeout (ms)
-- ARGV[2]  absolute timeout (ms)
-- ARGV[3]  user index key prefix (the user id is appended)
-- Returns nil when there is no such session, else its flat field/value list.
local key = KEYS[1]
local fields = redis.call('HGETALL', key)
if #fields == 0 then return false end

local idle, absolute = tonumber(ARGV[1]), tonumber(ARGV[2])
local ttl = redis.call('PTTL', key)
if ttl >= 0 and ttl < idle / 2 then
  local created, user
  for i = 1, #fields, 2 do
    if fields[i] == '!c' then created = tonumber(fields[i + 1])
    elseif fields[i] == '!u' then user = fields[i + 1] end
  end
  local now = now_ms()
  local new_ttl = session_ttl(created or now, idle, absolute, now)
  if new_ttl > ttl then
    redis.call('PEXPIRE', key, new_ttl)
    redis.call('HSET', key, '!a', now)
    if user then index_add(ARGV[3] .. user, key, now + new_ttl, now) end
  end
end
return fields
