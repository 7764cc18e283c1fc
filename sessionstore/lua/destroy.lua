-- Delete a session and its entry in its user's index.
-- KEYS     the session's key under the current secret, then under each
--          fallback secret (a rotation may not have moved it yet)
-- ARGV[1]  user index key prefix. Returns 1 if it existed.
local existed = 0
for i = 1, #KEYS do
  local user = redis.call('HGET', KEYS[i], '!u')
  existed = existed + redis.call('DEL', KEYS[i])
  if user then redis.call('ZREM', ARGV[1] .. user, KEYS[i]) end
end
return math.min(existed, 1)
