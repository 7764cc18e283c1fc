-- Delete a session and its entry in its user's index.
-- KEYS[1] session key; ARGV[1] user index key prefix. Returns 1 if it existed.
local user = redis.call('HGET', KEYS[1], '!u')
local existed = redis.call('DEL', KEYS[1])
if user then redis.call('ZREM', ARGV[1] .. user, KEYS[1]) end
return existed
