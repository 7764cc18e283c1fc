-- Set a cart line's quantity; 0 removes the line.
-- K[1] cart hash, K[2] products hash
-- A[1] product id, A[2] qty (0..max), A[3] max qty per line,
-- A[4] max lines per cart, A[5] cart TTL in seconds (0: no TTL)
local function apply(K, A)
  local cart, products = K[1], K[2]
  local pid, qty = A[1], tonumber(A[2])
  local max_lines, ttl = tonumber(A[4]), tonumber(A[5])
  local in_cart = redis.call('HEXISTS', cart, pid) == 1
  if not in_cart and redis.call('HEXISTS', products, pid) == 0 then
    return {error = 'unknown_product'}
  end
  if qty == 0 then
    redis.call('HDEL', cart, pid)
  else
    if not in_cart and redis.call('HLEN', cart) >= max_lines then
      return {error = 'cart_full', limit = max_lines}
    end
    redis.call('HSET', cart, pid, qty)
  end
  if ttl > 0 and redis.call('EXISTS', cart) == 1 then redis.call('EXPIRE', cart, ttl) end
  return {product_id = pid, qty = qty}
end
