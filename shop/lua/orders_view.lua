-- A user's latest orders, newest first, read in one round trip (a read: no
-- idempotency envelope).
-- K[1] the user's order-id list, K[2] orders hash; A[1] how many at most
-- Returns the orders' JSON, newest first (an id without an order is skipped).
local ids = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #ids == 0 then return {} end
local orders = {}
for _, raw in ipairs(redis.call('HMGET', KEYS[2], unpack(ids))) do
  if raw then orders[#orders + 1] = raw end
end
return orders
