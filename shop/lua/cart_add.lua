-- Add qty of a product to a cart, within the per-line and per-cart limits.
-- K[1] cart hash, K[2] products hash
-- A[1] product id, A[2] qty to add (>= 1), A[3] max qty per line,
-- A[4] max lines per cart, A[5] cart TTL in seconds (0: no TTL, a user's cart)
local function apply(K, A)
  local cart, products = K[1], K[2]
  local pid, qty = A[1], tonumber(A[2])
  local max_qty, max_lines, ttl = tonumber(A[3]), tonumber(A[4]), tonumber(A[5])
  if redis.call('HEXISTS', products, pid) == 0 then
    return {error = 'unknown_product'}
  end
  local current = tonumber(redis.call('HGET', cart, pid) or '0')
  if current == 0 and redis.call('HLEN', cart) >= max_lines then
    return {error = 'cart_full', limit = max_lines}
  end
  if current + qty > max_qty then
    return {error = 'qty_limit', limit = max_qty, current = current}
  end
  local new = redis.call('HINCRBY', cart, pid, qty)
  if ttl > 0 then redis.call('EXPIRE', cart, ttl) end
  return {product_id = pid, qty = new}
end
