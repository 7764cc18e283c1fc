-- Move an anonymous cart into a user's cart (at login), all at once.
-- Quantities of a product in both add up, capped at the per-line maximum;
-- lines beyond the per-cart maximum are dropped (and counted).
-- K[1] source cart, K[2] destination cart
-- A[1] max qty per line, A[2] max lines per cart
local function apply(K, A)
  local from, to = K[1], K[2]
  local max_qty, max_lines = tonumber(A[1]), tonumber(A[2])
  local lines = redis.call('HGETALL', from)
  local moved, dropped = 0, 0
  for i = 1, #lines, 2 do
    local pid, qty = lines[i], tonumber(lines[i + 1])
    local current = tonumber(redis.call('HGET', to, pid) or '0')
    if current == 0 and redis.call('HLEN', to) >= max_lines then
      dropped = dropped + 1
    else
      redis.call('HSET', to, pid, math.min(current + qty, max_qty))
      moved = moved + 1
    end
  end
  redis.call('DEL', from)
  return {moved = moved, dropped = dropped}
end
