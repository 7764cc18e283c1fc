-- wrk script for the session variants: every request carries a pre-created
-- session's cookie, rotating through a pool (one session per connection, roughly).
--   wrk ... -s session.lua URL -- COOKIE_FILE METHOD PATH
package.path = debug.getinfo(1, "S").source:match("@(.*/)") .. "?.lua;" .. package.path
local common = require("common")

local cookies, method, path
local n = 0

function init(args)
  cookies = common.read_lines(args[1])
  method, path = args[2], args[3]
end

function request()
  n = n + 1
  local headers = { Cookie = cookies[(n % #cookies) + 1] }
  if method == "POST" then headers["Content-Length"] = "0" end
  return wrk.format(method, path, headers)
end

done = common.done
