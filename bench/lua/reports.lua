-- POSTs heartbeat reports of 8 GPUs. bench/load.py prepends CLIENTS (one list of client ids
-- per wrk thread), BATCH, INTERVAL and DEVICES. Every report is a new (client, timestamp):
-- a thread's report k goes to its client k mod #clients at BASE + floor(k / #clients) * INTERVAL,
-- so each request stores new rows, as a live fleet's would. BATCH = 1 posts to the single-report
-- endpoint, otherwise {"reports": [...]} of BATCH reports to the batch endpoint.
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end

function init(args)
  base = tonumber(args[1])
  mine = CLIENTS[id]
  k = 0
  path = BATCH == 1 and "/api/client/heartbeat" or "/api/client/heartbeats"
end

local function report()
  local n = #mine
  local ts = os.date("!%Y-%m-%dT%H:%M:%SZ", base + math.floor(k / n) * INTERVAL)
  local load = k % 90
  local body = string.format(
    '{"client_id":"%s","timestamp":"%s","system":{"cpu_usage":%d,"memory_usage":%d,"disk_usage":45,' ..
    '"network_rx":%d,"network_tx":%d},"device_memsize":652472,"total_tflops":535.2,"devices":%s}',
    mine[(k % n) + 1], ts, 5 + load, 30 + load % 50, 1000000 + k, 200000 + k, DEVICES)
  k = k + 1
  return body
end

function request()
  local body
  if BATCH == 1 then
    body = report()
  else
    local parts = {}
    for i = 1, BATCH do
      parts[i] = report()
    end
    body = '{"reports":[' .. table.concat(parts, ",") .. ']}'
  end
  return wrk.format("POST", path, {["Content-Type"] = "application/json"}, body)
end
