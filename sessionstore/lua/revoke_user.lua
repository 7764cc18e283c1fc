-- Log a user out everywhere: delete every session in the user's index, then
-- the index. One script, so no session can be added half-way through.
-- (The session keys are not declared in KEYS: fine on a single primary with
-- Sentinel, not on Redis Cluster.)
-- KEYS[1] user index. Returns the number of sessions deleted.
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local deleted = 0
for i = 1, #members do
  deleted = deleted + redis.call('DEL', members[i])
end
redis.call('DEL', KEYS[1])
return deleted
