-- Shared by the bench's wrk scripts (wrk runs each script in every thread).
-- Prints one machine-readable line at the end, so the harness never parses
-- wrk's human output: requests, duration, latency percentiles (us), errors.

local M = {}

-- Lines of a file (cookies, product ids), for the requests to rotate through.
function M.read_lines(path)
  local lines = {}
  for line in io.lines(path) do
    if #line > 0 then lines[#lines + 1] = line end
  end
  if #lines == 0 then error("no lines in " .. path) end
  return lines
end

function M.done(summary, latency)
  local e = summary.errors
  io.write(string.format(
    'BENCH-JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end

return M
