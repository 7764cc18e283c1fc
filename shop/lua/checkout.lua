-- Checkout, all or nothing: check stock for every cart line, take it, write
-- the order, clear the cart. Redis runs the script alone, so concurrent
-- checkouts on any number of replicas can never sell more than there is.
-- K[1] cart, K[2] stock, K[3] products, K[4] orders hash,
-- K[5] order id counter, K[6] the user's order list
-- A[1] user id, A[2] creation time (ISO 8601, UTC), A[3] (optional) the
-- cart's lines as JSON {product id: qty} when the cart is not in Redis
-- (SHOP_STATE=memory, shop/replicamemory.py); K[1] is then absent from Redis.
local function apply(K, A)
  local cart, stock, products, orders, next_id, user_orders = K[1], K[2], K[3], K[4], K[5], K[6]
  local lines = {}
  if A[3] then
    for pid, qty in pairs(cjson.decode(A[3])) do
      table.insert(lines, pid)
      table.insert(lines, tostring(qty))
    end
  else
    lines = redis.call('HGETALL', cart)
  end
  if #lines == 0 then
    return {error = 'empty_cart'}
  end
  local items, short, total = {}, {}, 0
  for i = 1, #lines, 2 do
    local pid, qty = lines[i], tonumber(lines[i + 1])
    local raw = redis.call('HGET', products, pid)
    local available = tonumber(redis.call('HGET', stock, pid) or '0')
    local name = pid
    if raw then name = cjson.decode(raw).name end
    if (not raw) or available < qty then
      short[#short + 1] = {product_id = pid, name = name, requested = qty, available = available}
    else
      local price = cjson.decode(raw).price_cents
      items[#items + 1] = {product_id = pid, name = name, qty = qty,
                           price_cents = price, subtotal_cents = qty * price}
      total = total + qty * price
    end
  end
  if #short > 0 then
    table.sort(short, function(a, b) return a.product_id < b.product_id end)
    return {error = 'out_of_stock', short = short}
  end
  table.sort(items, function(a, b) return a.product_id < b.product_id end)
  for _, item in ipairs(items) do
    redis.call('HINCRBY', stock, item.product_id, -item.qty)
  end
  local id = redis.call('INCR', next_id)
  local order = {order_id = id, user_id = A[1], created_at = A[2], items = items, total_cents = total}
  redis.call('HSET', orders, id, cjson.encode(order))
  redis.call('LPUSH', user_orders, id)
  redis.call('DEL', cart)
  return order
end
