-- A cart with the catalog entry and stock of each of its lines, read in one
-- round trip and from one moment (a read: no idempotency envelope).
-- K[1] cart hash, K[2] products hash, K[3] stock hash
-- Returns {product id, qty, product JSON or false, stock or false} per line.
local cart = redis.call('HGETALL', KEYS[1])
if #cart == 0 then return {} end
local ids = {}
for i = 1, #cart, 2 do ids[#ids + 1] = cart[i] end
local infos = redis.call('HMGET', KEYS[2], unpack(ids))
local stock = redis.call('HMGET', KEYS[3], unpack(ids))
local lines = {}
for i = 1, #ids do
  lines[i] = {ids[i], cart[2 * i], infos[i], stock[i]}
end
return lines
