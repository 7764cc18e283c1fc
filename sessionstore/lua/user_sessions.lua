-- List a user's live sessions, pruning the index as it goes.
-- KEYS[1] user index. Returns {{session key, created ms, last active ms, expires ms}, ...}
local index = KEYS[1]
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
local members = redis.call('ZRANGE', index, 0, -1, 'WITHSCORES')
local out = {}
for i = 1, #members, 2 do
  local meta = redis.call('HMGET', members[i], '!c', '!a')
  if meta[1] then
    out[#out + 1] = {members[i], meta[1], meta[2], members[i + 1]}
  else
    redis.call('ZREM', index, members[i])
  end
end
return out
