-- wrk script for benches/load.sh: POSTs AdmissionReviews (the files named after `--`) to the
-- path in $WRK_PATH in rotation, optionally pausing $WRK_DELAY_MS between requests on each
-- connection, and prints one RESULT line with throughput and latency percentiles (µs).
-- Each body is sent as kube-apiserver sends it, compact on one line ending in a newline (the
-- stored captures are indented), unless $WRK_AS_STORED is set and not empty.
local bodies = {}
local next_body = 1
local path = os.getenv("WRK_PATH") or "/validate"
local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "0")
local as_stored = (os.getenv("WRK_AS_STORED") or "") ~= ""

-- The JSON text without whitespace outside strings (benches/core.rs's `captured` does the same).
local function compact(text)
  local out, in_string, escaped = {}, false, false
  for i = 1, #text do
    local c = text:sub(i, i)
    if in_string then
      out[#out + 1] = c
      in_string, escaped = escaped or c ~= '"', not escaped and c == "\\"
    elseif not c:match("%s") then
      out[#out + 1] = c
      in_string = c == '"'
    end
  end
  return table.concat(out) .. "\n"
end

init = function(args)
  for _, file in ipairs(args) do
    local f = assert(io.open(file, "rb"))
    local body = f:read("*a")
    f:close()
    if not as_stored then body = compact(body) end
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
