-- wrk script for benches/load.sh: POSTs AdmissionReviews (the files named after `--`) to the
-- path in $WRK_PATH in rotation, optionally pausing $WRK_DELAY_MS between requests on each
-- connection, and prints one RESULT line with throughput and latency percentiles (µs).
local bodies = {}
local next_body = 1
local path = os.getenv("WRK_PATH") or "/validate"
local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "0")

init = function(args)
  for _, file in ipairs(args) do
    local f = assert(io.open(file, "rb"))
    local body = f:read("*a")
    f:close()
    table.insert(bodies, wrk.format("POST", path .. "?timeout=5s",
      { ["Content-Type"] = "application/json", ["Host"] = "localhost" }, body))
  end
end

request = function()
  local r = bodies[next_body]
  next_body = next_body % #bodies + 1
  return r
end

-- A pause drawn from [delay/2, 3·delay/2] per request, so the connections do not fire in step
-- (wrk's timer has millisecond resolution; equal pauses would queue them behind each other).
if delay_ms > 0 then
  delay = function() return math.random(math.floor(delay_ms / 2), math.floor(delay_ms * 3 / 2)) end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT rps=%.0f p50=%d p99=%d p999=%d max=%d errors=%d non2xx=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max,
    e.connect + e.read + e.write + e.timeout, e.status))
end
