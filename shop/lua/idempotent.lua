-- Appended to every shop script (Redis 7 scripts cannot share code), whose
-- own file defines the change as `local function apply(K, A) ... end`.
--
-- It makes "claim an idempotency key" and "apply the change it guards" one
-- atomic step: Redis runs a script alone, so two replicas receiving the same
-- key at the same moment cannot both apply it, and a crash cannot leave a
-- claim without its result (or a result without its change).
--
-- KEYS[1]  idempotency record (ignored when ARGV[1] is '')
-- ARGV[1]  request fingerprint, or '' when the request carries no key
-- ARGV[2]  record TTL in seconds
-- KEYS[2..], ARGV[3..] are handed to apply() as K, A.
--
-- Returns {'fresh'|'replay', record JSON {"fp": ..., "result": ...}}.

local fp = ARGV[1]
if fp ~= '' then
  local stored = redis.call('GET', KEYS[1])
  if stored then
    -- Rewrite the record's own expiry, unchanged: a no-op for the data, but a
    -- write that is replicated, so a WAIT after a replay also covers the
    -- original write (WAIT counts up to this connection's last write).
    local expires_at = redis.call('PEXPIRETIME', KEYS[1])
    if expires_at > 0 then redis.call('PEXPIREAT', KEYS[1], expires_at) end
    return {'replay', stored}
  end
end

local K, A = {}, {}
for i = 2, #KEYS do K[i - 1] = KEYS[i] end
for i = 3, #ARGV do A[i - 2] = ARGV[i] end

local record = cjson.encode({fp = fp, result = apply(K, A)})
if fp ~= '' then
  redis.call('SET', KEYS[1], record, 'EX', tonumber(ARGV[2]))
end
return {'fresh', record}
