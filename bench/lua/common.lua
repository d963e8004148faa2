-- Shared by every scenario; bench/run.py prepends a generated `bench` config
-- table (n_items, list_paths) and appends one scenario file, then runs the
-- result with `wrk -s`. Each wrk thread has its own Lua state: setup() and
-- done() run in the main state, init()/request()/response() per thread.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

-- Per-thread state (globals, so done() can read them with thread:get).
non2xx = 0
statuses = {}
created = 0

local write_headers = { ["Content-Type"] = "application/json" }

function init(_args)
  math.randomseed(os.time() * 1000 + tid * 7919)
  for _ = 1, 10 do math.random() end
  -- Extra write headers (e.g. Authorization) come from the environment so a
  -- token is never written into a generated file: "Name: value" per line.
  local extra = os.getenv("BENCH_WRITE_HEADERS") or ""
  for line in extra:gmatch("[^\n]+") do
    local name, value = line:match("^%s*([^:]+):%s*(.-)%s*$")
    if name then write_headers[name] = value end
  end
end

function response(status, _headers, _body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    local key = tostring(status)
    statuses[key] = (statuses[key] or 0) + 1
  end
end

function get_item_request()
  return wrk.format("GET", "/items/" .. math.random(1, bench.n_items))
end

function list_page_request()
  return wrk.format("GET", bench.list_paths[math.random(1, #bench.list_paths)])
end

function create_item_request()
  created = created + 1
  local body = string.format(
    '{"name":"bench %d-%d","price":%d.%02d,"quantity":%d}',
    tid, created, math.random(0, 9999), math.random(0, 99), math.random(0, 1000)
  )
  return wrk.format("POST", "/items", write_headers, body)
end

function done(summary, latency, _requests)
  local total_non2xx = 0
  local by_status = {}
  for _, thread in ipairs(threads) do
    total_non2xx = total_non2xx + (thread:get("non2xx") or 0)
    for status, count in pairs(thread:get("statuses") or {}) do
      by_status[status] = (by_status[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(by_status) do
    table.insert(parts, string.format('"%s":%d', status, count))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"non2xx":%d,"statuses":{%s},'
      .. '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},'
      .. '"latency_us":{"mean":%.1f,"stdev":%.1f,"max":%d,'
      .. '"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    total_non2xx, table.concat(parts, ","),
    e.connect, e.read, e.write, e.timeout,
    latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)
  ))
end
