-- wrk script: wrk's own request (GET the URL, headers from -H), and the
-- machine-readable summary line of common.lua. The autoscale test's high load.
--   wrk ... -H 'Connection: close' -s get.lua URL
package.path = debug.getinfo(1, "S").source:match("@(.*/)") .. "?.lua;" .. package.path
local common = require("common")

done = common.done
