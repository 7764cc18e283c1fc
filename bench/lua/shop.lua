-- wrk script: a mixed shopping workload by logged-in shoppers.
-- Out of every 20 requests: 10 browse the catalog, 5 add to the cart,
-- 4 view the cart, 1 checks out. Mutations carry a unique Idempotency-Key.
--   wrk ... -s shop.lua URL -- COOKIE_FILE PRODUCT_FILE RUN_NONCE
package.path = debug.getinfo(1, "S").source:match("@(.*/)") .. "?.lua;" .. package.path
local common = require("common")

local cookies, products, nonce
local n = 0
local thread_no = 0

-- Runs in wrk's main state, once per thread: give each thread a number, so the
-- idempotency keys of two threads never collide.
function setup(thread)
  thread_no = thread_no + 1
  thread:set("tid", thread_no)
end

function init(args)
  cookies = common.read_lines(args[1])
  products = common.read_lines(args[2])
  nonce = args[3]
end

local MIX = { "browse", "browse", "add", "browse", "cart", "browse", "add", "browse", "cart",
              "browse", "add", "browse", "cart", "browse", "add", "browse", "cart", "add",
              "browse", "checkout" }

function request()
  n = n + 1
  local kind = MIX[(n % #MIX) + 1]
  -- One shopper per visit of #MIX requests (so the shopper who checks out is
  -- the one who filled the cart); threads start on different shoppers.
  local visit = math.floor(n / #MIX) + (tid or 0) * 3
  local headers = { Cookie = cookies[(visit % #cookies) + 1] }
  local key = string.format("bench-%s-%d-%d", nonce, tid or 0, n)
  if kind == "browse" then
    return wrk.format("GET", "/api/products", headers)
  elseif kind == "cart" then
    return wrk.format("GET", "/api/cart", headers)
  elseif kind == "add" then
    headers["Content-Type"] = "application/json"
    headers["Idempotency-Key"] = key
    local body = string.format('{"product_id": "%s", "qty": 1}', products[(n % #products) + 1])
    return wrk.format("POST", "/api/cart/items", headers, body)
  else
    headers["Idempotency-Key"] = key
    headers["Content-Length"] = "0"
    return wrk.format("POST", "/api/checkout", headers)
  end
end

done = common.done
